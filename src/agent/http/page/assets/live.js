// poolpilot status page: live updates over Server-Sent Events. The page is complete without
// this script; it only re-fetches this same URL after each published turn and swaps the
// sections marked data-live whose HTML changed.
(() => {
  "use strict";
  const state = document.getElementById("live-state");
  if (!state || !window.EventSource || !window.fetch || !window.DOMParser) return;
  const say = (word) => {
    state.textContent = word;
    document.body.dataset.live = word;
  };
  const stream = new EventSource("/api/v1/stream");
  let busy = false;
  let again = false;
  const refresh = async () => {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    try {
      const r = await fetch(location.href, { cache: "no-store", headers: { Accept: "text/html" } });
      if (r.ok) {
        const fresh = new DOMParser().parseFromString(await r.text(), "text/html");
        for (const el of document.querySelectorAll("[data-live]")) {
          const next = el.id && fresh.getElementById(el.id);
          if (next && next.innerHTML !== el.innerHTML) el.innerHTML = next.innerHTML;
        }
        document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
        if (stream.readyState === EventSource.OPEN) say("live");
      }
    } catch (e) {
      say("update failed; retrying");
    }
    busy = false;
    if (again) {
      again = false;
      refresh();
    }
  };
  stream.addEventListener("open", () => say("live"));
  stream.addEventListener("turn", refresh);
  stream.addEventListener("error", () => say(stream.readyState === EventSource.CLOSED ? "disconnected" : "reconnecting"));
})();
