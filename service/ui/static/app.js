// The dashboard's only script: a confirmation before an action, and live updates. Without it
// every page still works (actions then ask on a confirmation page).
(function () {
  "use strict";

  var questions = {
    redeliver: "Send the final event of job %s again?",
    cancel: "Cancel the watch of job %s? Polling stops and pending deliveries are dropped.",
  };

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    var verb = form.classList.contains("redeliver") ? "redeliver"
      : form.classList.contains("cancel") ? "cancel" : null;
    if (verb === null) return;
    var question = questions[verb].replace("%s", form.getAttribute("data-job") || "");
    if (!window.confirm(question)) {
      event.preventDefault();
      return;
    }
    if (!form.querySelector("input[name=confirm]")) {
      var confirmed = document.createElement("input");
      confirmed.type = "hidden";
      confirmed.name = "confirm";
      confirmed.value = "yes";
      form.appendChild(confirmed);
    }
  });

  var region = document.getElementById("live-region");
  if (!region || !window.EventSource || !window.fetch) return;

  var url = region.getAttribute("data-live") + "&since=" +
    encodeURIComponent(region.getAttribute("data-fingerprint") || "");
  var source = new EventSource(url);
  var busy = false;
  var again = false;

  // Fetch this page's live part (`?fragment=1`) and swap it in, one fetch at a time.
  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    var target = new URL(window.location.href);
    target.searchParams.set("fragment", "1");
    fetch(target.toString(), { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) {
        if (response.redirected || !response.ok) {
          // Signed out, or the watch is gone: show the page as the server has it now.
          source.close();
          window.location.reload();
          return;
        }
        return response.text().then(function (html) {
          region.innerHTML = html;
          region.setAttribute("data-updated", String(Date.now()));
        });
      })
      .catch(function () { /* the next change tries again */ })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  source.addEventListener("changed", refresh);
  window.addEventListener("pagehide", function () { source.close(); });
})();
