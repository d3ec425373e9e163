// Live preview of a reward edit: as a weight changes, ask the console to validate the edited
// reward and measure its alignment, and show the answer in the page's live region.
(() => {
  "use strict";
  const form = document.getElementById("reward-form");
  const preview = document.getElementById("reward-preview");
  if (!form || !preview) {
    return;
  }
  let timer = 0;
  let latest = 0;

  async function refresh() {
    const ticket = ++latest;
    preview.setAttribute("aria-busy", "true");
    let html;
    try {
      const response = await fetch(form.dataset.preview, {
        method: "POST",
        body: new FormData(form),
        headers: { "X-CSRF-Token": form.elements.csrf_token.value },
        credentials: "same-origin",
      });
      html = response.ok ? await response.text() : null;
    } catch (error) {
      html = null;
    }
    if (ticket !== latest) {
      return; // a newer change is on its way
    }
    if (html === null) {
      const message = document.createElement("p");
      message.className = "message message-error";
      message.textContent = "The preview could not be updated: reload the page (your session may have ended).";
      preview.replaceChildren(message);
    } else {
      preview.innerHTML = html; // the console's own escaped template
    }
    preview.removeAttribute("aria-busy");
  }

  form.addEventListener("input", (event) => {
    if (!event.target.name || !event.target.name.startsWith("weight-")) {
      return;
    }
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, 300);
  });
})();
