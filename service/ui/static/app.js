// The dashboard's only script: a confirmation before an action (Redeliver's a dialog with its
// choice of endpoints), and live updates that keep the keyboard focus and the opened sections,
// and announce status changes to screen readers. Without it every page still works (actions
// then ask on a confirmation page).
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    var dialog = document.getElementById(form.getAttribute("data-dialog") || "");
    if (dialog && dialog.showModal) {
      // The dialog asks what the confirmation page would, and posts its own form.
      event.preventDefault();
      dialog.showModal();
      return;
    }
    if (!form.classList.contains("cancel")) return;
    var question = "Cancel the watch of job %s? Polling stops and pending deliveries are dropped."
      .replace("%s", form.getAttribute("data-job") || "");
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
  var announcer = document.getElementById("announcer");

  // An element of the live part is found again after a swap by a key: its nearest element
  // (itself included) with an id or a watch's or delivery's id, and, when that is an
  // ancestor, its place among the ancestor's elements of its tag.
  var ANCHORS = "[id], [data-watch-id], [data-delivery-id]";

  function anchorSelector(anchor) {
    if (anchor.id) return "#" + CSS.escape(anchor.id);
    var name = anchor.hasAttribute("data-watch-id") ? "data-watch-id" : "data-delivery-id";
    return "[" + name + '="' + CSS.escape(anchor.getAttribute(name)) + '"]';
  }

  function keyOf(element) {
    var anchor = element.closest(ANCHORS);
    if (!anchor || !region.contains(anchor)) return null;
    if (anchor === element) return JSON.stringify([anchorSelector(anchor)]);
    var same = anchor.getElementsByTagName(element.tagName);
    var place = Array.prototype.indexOf.call(same, element);
    return JSON.stringify([anchorSelector(anchor), element.tagName, place]);
  }

  function find(key) {
    var parts = JSON.parse(key);
    var anchor = region.matches(parts[0]) ? region : region.querySelector(parts[0]);
    if (!anchor || parts.length === 1) return anchor;
    return anchor.getElementsByTagName(parts[1])[parts[2]] || null;
  }

  // What the reader would lose with the old part: where the focus is, which sections are
  // open or closed, and the statuses announced so far.
  function remember() {
    var kept = { focus: null, sections: {}, said: {} };
    var active = document.activeElement;
    if (active && active !== region && region.contains(active)) kept.focus = keyOf(active);
    region.querySelectorAll("details").forEach(function (section) {
      var key = keyOf(section);
      if (key !== null) kept.sections[key] = section.open;
    });
    region.querySelectorAll("[data-announce]").forEach(function (element) {
      kept.said[keyOf(element)] = element.getAttribute("data-announce");
    });
    return kept;
  }

  function restore(kept) {
    Object.keys(kept.sections).forEach(function (key) {
      var section = find(key);
      if (section && section.tagName === "DETAILS") section.open = kept.sections[key];
    });
    if (kept.focus !== null) {
      var refocused = find(kept.focus);
      if (refocused) refocused.focus({ preventScroll: true });
      if (!refocused || document.activeElement !== refocused) {
        // Gone (a button whose action no longer applies): the main part, not the page's top.
        document.getElementById("main").focus({ preventScroll: true });
      }
    }
    var news = [];
    region.querySelectorAll("[data-announce]").forEach(function (element) {
      var text = element.getAttribute("data-announce");
      if (kept.said[keyOf(element)] !== text) news.push(text);
    });
    // A flash said what an action started; news of how it went take its place.
    var flash = document.getElementById("flash");
    if (flash && news.length) flash.remove();
    if (announcer && news.length) {
      var shown = news.slice(0, 3).join(". ");
      if (news.length > 3) shown += ". " + (news.length - 3) + " more changed";
      // Emptied first, so that the same words said again are announced again.
      announcer.textContent = "";
      window.setTimeout(function () { announcer.textContent = shown + "."; }, 100);
    }
  }

  var url = region.getAttribute("data-live") + "&since=" +
    encodeURIComponent(region.getAttribute("data-fingerprint") || "");
  var source = new EventSource(url);
  var busy = false;
  var again = false;

  // Fetch this page's live part (`?fragment=1`) and swap it in, one fetch at a time, and not
  // under an open dialog (the redelivery's choice): once it is closed.
  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    var open = region.querySelector("dialog[open]");
    if (open) {
      if (!open.hasAttribute("data-waiting")) {
        open.setAttribute("data-waiting", "");
        open.addEventListener("close", refresh, { once: true });
      }
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
          var kept = remember();
          region.innerHTML = html;
          restore(kept);
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
