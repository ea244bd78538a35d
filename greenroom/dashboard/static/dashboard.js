// Keeps the counts of a dashboard page fresh without reloading it: every few seconds the page
// is fetched again and each element marked data-live is replaced by its new version. An error
// page shown while the broker was unreachable reloads itself once the broker answers.
"use strict";

(function () {
  const period = Number(document.body.dataset.refreshMs || 0);
  if (!period) {
    return;
  }
  const offline = document.getElementById("offline");

  function openDetails(root) {
    return Array.from(root.querySelectorAll("details[open]")).map((node) => node.id).filter(Boolean);
  }

  function replaceLive(fresh) {
    for (const node of document.querySelectorAll("[data-live]")) {
      const replacement = node.id && fresh.getElementById(node.id);
      if (!replacement) {
        continue; // not on the fresh page (an error page): keep what was shown, under the banner
      }
      const keepOpen = openDetails(node);
      node.replaceWith(replacement);
      for (const id of keepOpen) {
        const details = document.getElementById(id);
        if (details) {
          details.open = true;
        }
      }
    }
  }

  async function refresh() {
    try {
      const response = await fetch(window.location.href, { headers: { "X-Greenroom-Refresh": "1" }, cache: "no-store" });
      offline.hidden = true;
      if (response.ok && document.querySelector("[data-reload-when-ok]")) {
        window.location.reload();
        return;
      }
      const text = await response.text();
      replaceLive(new DOMParser().parseFromString(text, "text/html"));
    } catch (error) {
      offline.hidden = false;
    } finally {
      window.setTimeout(refresh, period);
    }
  }

  window.setTimeout(refresh, period);
})();
