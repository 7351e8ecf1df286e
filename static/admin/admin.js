// Console behaviour every page shares; each works without it (plain forms and links).
"use strict";

// Copy buttons: <button data-copy="#id-of-element-holding-the-text">.
for (const button of document.querySelectorAll("button[data-copy]")) {
  button.addEventListener("click", async () => {
    const source = document.querySelector(button.dataset.copy);
    const text = source ? (source.value ?? source.textContent) : "";
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch {
      if (source && source.select) source.select();
      button.textContent = "Press Ctrl+C to copy";
    }
  });
}

// Destructive forms ask first: <form data-confirm="Delete this flow?">.
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}
