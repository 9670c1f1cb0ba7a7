// Keeps the relative times of a page ("3 min ago") true while it stays open; the server said
// them against the request's time, in the same words (service/ui/words.py `ago`).
(function () {
  "use strict";

  function ago(at, now) {
    var seconds = (now - at) / 1000;
    if (seconds > -60 && seconds < 10) return "just now";
    if (seconds < 0 || seconds >= 30 * 86400) return new Date(at).toISOString().slice(0, 10);
    if (seconds < 60) return Math.floor(seconds) + " s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
    var days = Math.floor(seconds / 86400);
    return days + (days > 1 ? " days ago" : " day ago");
  }

  function refresh() {
    var now = Date.now();
    var times = document.querySelectorAll("time[datetime][title]");
    for (var i = 0; i < times.length; i++) {
      var at = Date.parse(times[i].getAttribute("datetime"));
      if (!isNaN(at)) times[i].textContent = ago(at, now);
    }
  }

  window.setInterval(refresh, 15000);
})();
