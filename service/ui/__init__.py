"""The dashboard for people at `/ui/`: server-rendered pages over the same service layer as the
API (`dashboard.py` reads, `routes.py` serves, `session.py` signs sign-ins and CSRF tokens)."""
