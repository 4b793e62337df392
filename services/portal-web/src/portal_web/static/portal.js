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

  // Inside a frame: tell the parent our height, so the frame never needs a scrollbar.
  // Only to the embedding origin the browser reports (CSP frame-ancestors already
  // limits who that can be), never to "*".
  if (framed && window.location.ancestorOrigins && window.location.ancestorOrigins.length) {
    var parentOrigin = window.location.ancestorOrigins[0];
    var send = function () {
      window.parent.postMessage(
        { type: "billfold:height", height: document.documentElement.scrollHeight },
        parentOrigin
      );
    };
    window.addEventListener("load", send);
    window.addEventListener("resize", send);
  }
})();
