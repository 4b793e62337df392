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
