/* Billfold portal: progressive enhancement only; every page works without it. */
(function () {
  "use strict";
  var framed = false;
  try { framed = window.self !== window.top; } catch (e) { framed = true; }

  // The link page: say whether we are framed (for browsers without Sec-Fetch-Dest),
  // then continue by POST at once. Without script the button does the same.
  var flags = document.querySelectorAll("[data-frame-flag]");
  for (var i = 0; i < flags.length; i++) { flags[i].value = framed ? "1" : "0"; }
  var auto = document.querySelector("form[data-autosubmit]");
  if (auto) {
    var button = auto.querySelector("button");
    if (button) { button.disabled = true; }
    auto.submit();
  }

  // Stripe's pages at top level: the hand-over page goes on by itself (a link, since
  // our CSP's form-action keeps a form POST from redirecting off-site).
  var follow = document.querySelector("a[data-autofollow]");
  if (follow && !framed) { window.location.assign(follow.href); }

  // Stripe's pages open in a new tab from a frame (they refuse frames) and for hosted
  // invoices: this page then moves to its waiting state, which looks again until the
  // mirror shows the result (the "Done? Refresh" link does the same without script).
  var recheck = document.querySelector("a[data-recheck]");
  var hosted = document.querySelectorAll("a[data-hosted]");
  if (recheck) {
    for (var h = 0; h < hosted.length; h++) {
      hosted[h].addEventListener("click", function () {
        window.setTimeout(function () { window.location.assign(recheck.href); }, 1000);
      });
    }
  }

  // The mirror is catching up with a change made on Stripe's page ("Updating…"): look
  // again shortly; without script the Refresh link does the same.
  var poll = document.querySelector("a[data-poll]");
  if (poll) {
    window.setTimeout(function () { window.location.replace(poll.href); }, 2000);
  }

  // Inside a frame: talk to the embedding page (the drop-in script, or a tenant's own
  // iframe) by postMessage, only to an origin the site allows to frame it (its
  // frame_ancestors, in the page's meta; CSP frame-ancestors already limits who can
  // frame us), never to "*". The parent's origin is the one the browser reports
  // (location.ancestorOrigins); where that is missing (Firefox), only a site with a
  // single allowed origin gets messages.
  var parentOrigin = null;
  if (framed) {
    var meta = document.querySelector('meta[name="billfold-parents"]');
    var allowed = meta ? meta.getAttribute("content").split(" ") : [];
    var reported = window.location.ancestorOrigins && window.location.ancestorOrigins.length
      ? window.location.ancestorOrigins[0] : null;
    if (reported) {
      if (allowed.indexOf(reported) >= 0) { parentOrigin = reported; }
    } else if (allowed.length === 1) {
      parentOrigin = allowed[0];
    }
  }
  var tell = function (message) {
    if (parentOrigin) { window.parent.postMessage(message, parentOrigin); }
  };
  if (parentOrigin) {
    // Our height, so a tenant's own iframe never needs a scrollbar.
    var send = function () {
      tell({ type: "billfold:height", height: document.documentElement.scrollHeight });
    };
    window.addEventListener("load", send);
    window.addEventListener("resize", send);
    // A page of the portal is showing (the drop-in's "ready", once per opening).
    tell({ type: "billfold:ready" });
    // An action just succeeded: its name only (no ids, amounts or tokens).
    var done = document.querySelector("[data-action]");
    if (done) { tell({ type: "billfold:action", action: done.getAttribute("data-action") }); }
    // Escape inside the frame closes the drop-in's modal (keys pressed in a frame never
    // reach the parent page).
    document.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { tell({ type: "billfold:escape" }); }
    });
  }
})();
