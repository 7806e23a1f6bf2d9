// Skein portal actions: every form.action POSTs its fields as JSON to its data-post URL
// (the JSON API), with the browser's Airflow session cookie, then reloads the page, which
// shows what was done (kept in sessionStorage across the reload) above the new state.
// Loaded from the portal itself (the pages' CSP allows no inline script).
"use strict";
document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form.action");
  if (!form) return;
  event.preventDefault();
  const body = {};
  for (const [name, value] of new FormData(form)) {
    if (value === "") continue;
    // a list field (data-list, e.g. the bulk form's ticked consumers) collects every value
    if (name === form.dataset.list) (body[name] = body[name] || []).push(value);
    else body[name] = value;
  }
  if (event.submitter && event.submitter.name) body[event.submitter.name] = event.submitter.value;
  const out = form.querySelector("output.result");
  form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
  try {
    const response = await fetch(form.dataset.post, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    const text = response.ok ? answer.message : (typeof answer.detail === "string" ? answer.detail
      : `refused (HTTP ${response.status})`);
    if (out) { out.textContent = text || ""; out.className = "result " + (response.ok ? "ok" : "error"); }
    if (response.ok) {
      sessionStorage.setItem("skein.flash", `Done: ${text}. The page below shows the state now.`);
      setTimeout(() => window.location.reload(), 300);
    }
  } finally {
    form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
  }
});
document.addEventListener("DOMContentLoaded", () => {
  const flash = document.getElementById("flash");
  const text = sessionStorage.getItem("skein.flash");
  if (!flash || !text) return;
  sessionStorage.removeItem("skein.flash");
  flash.textContent = text;
  flash.hidden = false;
});
