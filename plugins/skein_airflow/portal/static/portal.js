// Skein portal actions: every form.action POSTs its fields as JSON to its data-post URL
// (the JSON API), with the browser's Airflow session cookie, then reloads the page.
// Loaded from the portal itself (the pages' CSP allows no inline script).
"use strict";
document.addEventListener("submit", async (event) => {
  const form = event.target.closest("form.action");
  if (!form) return;
  event.preventDefault();
  const body = {};
  for (const [name, value] of new FormData(form)) if (value !== "") body[name] = value;
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
    if (response.ok) setTimeout(() => window.location.reload(), 700);
  } finally {
    form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
  }
});
