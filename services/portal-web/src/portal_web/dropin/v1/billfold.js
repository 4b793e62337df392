/*! Billfold drop-in v1: the billing portal in an accessible modal on your page.
 *
 *   <script src="https://PORTAL/js/v1/billfold.js"></script>
 *   <script>Billfold.init({ site: "your-site-slug" });</script>
 *   <button type="button" onclick="Billfold.open()">Billing</button>
 *
 * Billfold.init({site, title?, closeLabel?})  site: the site's slug or publishable key
 * Billfold.open()            the portal's email + code sign-in, in a modal
 * Billfold.open({url})       a session link (from the session API) instead; it must be
 *                            on the portal's own origin (the one this file came from)
 * Billfold.close()
 * Billfold.on(name, fn) / Billfold.off(name, fn)   name: "ready" | "close" | "action"
 *
 * The portal talks to this page by postMessage only: messages are accepted only from
 * the portal's origin AND from this modal's own iframe; the portal posts only to an
 * embedding origin in the site's frame_ancestors. Nothing here uses cookies: the frame
 * works with third-party cookies blocked. No other host is contacted.
 */
(function (window, document) {
  "use strict";
  if (window.Billfold && window.Billfold.version) { return; }

  var script = document.currentScript;
  var PORTAL = null;
  try { PORTAL = script ? new URL(script.src).origin : null; } catch (e) { PORTAL = null; }
  var SITE = /^[A-Za-z0-9_-]{1,128}$/;
  var ACTION = /^[a-z_]{1,32}(\.[a-z_]{1,32})?$/;
  var EVENTS = ["ready", "close", "action"];

  var config = null;
  var listeners = { ready: [], close: [], action: [] };
  var state = null;  // the open modal: {dialog, iframe, opener, ready, overflow}
  var sheet = null;
  var counter = 0;

  function emit(name, detail) {
    var fns = listeners[name].slice();
    for (var i = 0; i < fns.length; i++) {
      try { fns[i](detail); } catch (err) {
        // One listener's error must not stop the others (nor our own cleanup).
        window.setTimeout(function () { throw err; }, 0);
      }
    }
  }

  // Styles through the CSSOM and a constructed sheet: no inline <style> or style
  // attribute, so a tenant page whose CSP forbids inline styles still shows the modal.
  function styleSheet() {
    if (sheet || !("adoptedStyleSheets" in document) || typeof CSSStyleSheet !== "function") { return; }
    try {
      sheet = new CSSStyleSheet();
      sheet.replaceSync(
        "dialog.billfold-modal::backdrop{background:rgba(0,0,0,.55)}" +
        "dialog.billfold-modal button.billfold-close:focus-visible{outline:3px solid #1a56db;outline-offset:2px}"
      );
      document.adoptedStyleSheets = document.adoptedStyleSheets.concat([sheet]);
    } catch (e) { sheet = null; }
  }

  function css(el, props) {
    for (var k in props) { if (Object.prototype.hasOwnProperty.call(props, k)) { el.style[k] = props[k]; } }
  }

  function init(options) {
    if (!options || typeof options.site !== "string" || !SITE.test(options.site)) {
      throw new Error("Billfold.init: give {site: \"your-site-slug\"} (or the site's publishable key)");
    }
    config = {
      site: options.site,
      title: typeof options.title === "string" && options.title ? options.title : "Billing",
      closeLabel: typeof options.closeLabel === "string" && options.closeLabel ? options.closeLabel : "Close"
    };
  }

  function startUrl(options) {
    if (!PORTAL) { throw new Error("Billfold: load billfold.js with a <script src> from the portal"); }
    if (options && options.url !== undefined) {
      var url;
      try { url = new URL(String(options.url)); } catch (e) { url = null; }
      // A session link of this portal only: never frame another origin in our modal.
      if (!url || url.origin !== PORTAL) {
        throw new Error("Billfold.open: url must be a link on " + PORTAL);
      }
      return url.href;
    }
    if (!config) { throw new Error("Billfold.open: call Billfold.init({site}) first"); }
    return PORTAL + "/s/" + encodeURIComponent(config.site);
  }

  function open(options) {
    var src = startUrl(options);
    if (!config) { config = { site: "", title: "Billing", closeLabel: "Close" }; }
    if (state) { close(); }
    styleSheet();
    var id = "billfold-title-" + (++counter);
    var dialog = document.createElement("dialog");
    dialog.className = "billfold-modal";
    dialog.setAttribute("role", "dialog");
    dialog.setAttribute("aria-modal", "true");
    dialog.setAttribute("aria-labelledby", id);
    css(dialog, {
      boxSizing: "border-box", padding: "0", border: "0", margin: "auto",
      width: "760px", maxWidth: "100vw", height: "880px", maxHeight: "100vh",
      background: "#fff", color: "#111", borderRadius: "8px", overflow: "hidden"
    });
    var inner = document.createElement("div");
    css(inner, { display: "flex", flexDirection: "column", width: "100%", height: "100%" });

    // Focus guards: Tab past the frame's last element lands on the end guard, which
    // sends focus back to the first control; Shift+Tab before it, back into the frame.
    var guardStart = document.createElement("span");
    var guardEnd = document.createElement("span");
    guardStart.tabIndex = 0;
    guardEnd.tabIndex = 0;

    var header = document.createElement("div");
    css(header, {
      display: "flex", alignItems: "center", justifyContent: "space-between", gap: "8px",
      padding: "8px 12px", borderBottom: "1px solid #d0d0d0", flex: "0 0 auto"
    });
    var title = document.createElement("h2");
    title.id = id;
    title.textContent = config.title;
    css(title, { margin: "0", color: "#111", font: "600 18px/1.3 system-ui, sans-serif" });
    var closeButton = document.createElement("button");
    closeButton.type = "button";
    closeButton.className = "billfold-close";
    closeButton.textContent = config.closeLabel;
    css(closeButton, {
      font: "500 16px/1 system-ui, sans-serif", padding: "10px 14px", minHeight: "44px",
      border: "1px solid #444", borderRadius: "6px", background: "#fff", color: "#111", cursor: "pointer"
    });
    closeButton.addEventListener("click", function () { close(); });
    header.appendChild(title);
    header.appendChild(closeButton);

    var iframe = document.createElement("iframe");
    iframe.title = config.title;
    iframe.src = src;
    // No referrer: a session link's token never reaches another site through it.
    iframe.referrerPolicy = "no-referrer";
    css(iframe, { border: "0", width: "100%", flex: "1 1 auto", minHeight: "0", display: "block" });

    inner.appendChild(guardStart);
    inner.appendChild(header);
    inner.appendChild(iframe);
    inner.appendChild(guardEnd);
    dialog.appendChild(inner);

    guardEnd.addEventListener("focus", function () { closeButton.focus(); });
    guardStart.addEventListener("focus", function () { iframe.focus(); });
    // Escape with focus on our page: the dialog's cancel; inside the frame the portal
    // tells us (below). Either way our close(), so focus and scrolling come back.
    dialog.addEventListener("cancel", function (e) { e.preventDefault(); close(); });
    dialog.addEventListener("keydown", function (e) {
      if (e.key === "Escape") { e.preventDefault(); close(); }
    });

    state = {
      dialog: dialog, iframe: iframe, opener: document.activeElement, ready: false,
      overflow: document.documentElement.style.overflow
    };
    document.body.appendChild(dialog);
    document.documentElement.style.overflow = "hidden";  // the page behind does not scroll
    if (typeof dialog.showModal === "function") {
      dialog.showModal();  // the rest of the page is inert: focus stays in the dialog
    } else {
      dialog.setAttribute("open", "");
    }
    closeButton.focus();
  }

  function close() {
    if (!state) { return; }
    var s = state;
    state = null;
    if (typeof s.dialog.close === "function" && s.dialog.open) {
      try { s.dialog.close(); } catch (e) { /* already closed */ }
    }
    if (s.dialog.parentNode) { s.dialog.parentNode.removeChild(s.dialog); }
    document.documentElement.style.overflow = s.overflow;
    if (s.opener && typeof s.opener.focus === "function" && document.contains(s.opener)) {
      s.opener.focus();
    }
    emit("close", {});
  }

  function onMessage(e) {
    // Only the portal's origin, and only our own frame's window: a message from any
    // other origin or window (another frame of the page, the page itself) is ignored.
    if (!state || e.origin !== PORTAL || e.source !== state.iframe.contentWindow) { return; }
    var data = e.data;
    if (!data || typeof data !== "object" || typeof data.type !== "string") { return; }
    if (data.type === "billfold:ready") {
      if (!state.ready) { state.ready = true; emit("ready", {}); }
    } else if (data.type === "billfold:action") {
      // Only the action's name: no ids, no amounts, no tokens.
      if (typeof data.action === "string" && ACTION.test(data.action)) {
        emit("action", { action: data.action });
      }
    } else if (data.type === "billfold:escape") {
      close();
    }
  }
  window.addEventListener("message", onMessage);

  function on(name, fn) {
    if (EVENTS.indexOf(name) < 0 || typeof fn !== "function") {
      throw new Error("Billfold.on: name is one of " + EVENTS.join(", "));
    }
    listeners[name].push(fn);
  }

  function off(name, fn) {
    if (EVENTS.indexOf(name) < 0) { return; }
    listeners[name] = listeners[name].filter(function (f) { return f !== fn; });
  }

  window.Billfold = {
    version: "1",
    init: init,
    open: open,
    close: close,
    on: on,
    off: off,
    isOpen: function () { return state !== null; }
  };
})(window, document);
