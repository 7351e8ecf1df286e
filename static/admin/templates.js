// The DPP template editor: CodeMirror over the plain textareas, and a live preview of the DPP the avatar
// receives. Without this script the form still saves (and the server checks everything on save).
"use strict";

(() => {
  const PREVIEW_DELAY_MS = 300;
  const form = document.getElementById("template-form");
  const preview = document.getElementById("preview");
  const output = document.getElementById("preview-output");
  const statusLine = document.getElementById("preview-status");
  const errorList = document.getElementById("preview-errors");
  const sampleFields = document.getElementById("sample-fields");
  const sampleEmpty = document.getElementById("sample-empty");
  const editors = new Map(); // field name -> CodeMirror instance

  function fieldText(name) {
    const editor = editors.get(name);
    if (editor) return editor.getValue();
    const textarea = form.querySelector(`[data-json-field="${name}"]`);
    return textarea ? textarea.value : "";
  }

  // CodeMirror, with the field's visible label naming the editor's own input (so "Template" still labels it).
  function enhance(textarea) {
    if (typeof window.CodeMirror !== "function") return;
    const name = textarea.dataset.jsonField;
    const editor = window.CodeMirror.fromTextArea(textarea, {
      mode: { name: "javascript", json: true },
      lineNumbers: true,
      lineWrapping: true,
      indentUnit: 2,
      tabSize: 2,
      viewportMargin: Infinity,
      extraKeys: { Tab: false, "Shift-Tab": false }, // Tab leaves the editor: keyboard users are not trapped
    });
    const input = editor.getInputField();
    input.id = `f-${name}-editor`;
    const describedBy = textarea.getAttribute("aria-describedby");
    if (describedBy) input.setAttribute("aria-describedby", describedBy);
    const label = document.getElementById(`l-${name}`);
    if (label) label.htmlFor = input.id;
    editor.getWrapperElement().classList.add("tpl-editor");
    editor.on("change", () => {
      editor.save();
      schedule();
    });
    editors.set(name, editor);
  }

  // Sample inputs, one per declared variable, rebuilt when the variables change (values typed are kept).
  function declaredVariables() {
    try {
      const value = JSON.parse(fieldText("variables") || "[]");
      return Array.isArray(value) ? value.filter((v) => v && typeof v.name === "string") : [];
    } catch {
      return null; // a mistake in progress: keep the inputs as they are
    }
  }

  function rebuildSamples() {
    const variables = declaredVariables();
    if (variables === null) return;
    const typed = new Map();
    for (const input of sampleFields.querySelectorAll("input[data-sample]")) {
      typed.set(input.dataset.sample, input.value);
    }
    for (const old of sampleFields.querySelectorAll(".field")) old.remove();
    sampleEmpty.hidden = variables.length > 0;
    for (const variable of variables) {
      const wrapper = document.createElement("div");
      wrapper.className = "field";
      const id = `sample-${variable.name}`;
      const label = document.createElement("label");
      label.htmlFor = id;
      label.textContent = variable.name;
      const input = document.createElement("input");
      input.id = id;
      input.type = "text";
      input.dataset.sample = variable.name;
      // Part of the editor form too: "Try as draft" opens the page with these values.
      input.name = `sample.${variable.name}`;
      input.setAttribute("form", "template-form");
      const fixed = variable.source === "fixed";
      const initial = fixed ? variable.default : (variable.example ?? variable.default ?? "");
      input.value = typed.has(variable.name) && !fixed ? typed.get(variable.name) : String(initial ?? "");
      input.disabled = fixed;
      input.addEventListener("input", schedule);
      wrapper.append(label, input);
      if (fixed) {
        const hint = document.createElement("p");
        hint.className = "hint";
        hint.textContent = "Fixed: always this value.";
        wrapper.append(hint);
      }
      sampleFields.append(wrapper);
    }
  }

  function samples() {
    const values = {};
    for (const input of sampleFields.querySelectorAll("input[data-sample]")) {
      if (!input.disabled) values[input.dataset.sample] = input.value;
    }
    return values;
  }

  function showErrors(errors) {
    errorList.replaceChildren();
    for (const editor of editors.values()) {
      for (let line = 0; line < editor.lineCount(); line += 1) {
        editor.removeLineClass(line, "background", "tpl-error-line");
      }
    }
    for (const error of errors) {
      const item = document.createElement("li");
      item.className = "error";
      const field = { body: "Template", variables: "Variables", schema: "JSON Schema" }[error.field];
      item.textContent = field ? `${field}: ${error.message}` : error.message;
      errorList.append(item);
      const editor = editors.get(error.field);
      const line = error.line ? error.line - 1 : editor && error.path ? lineOfPath(editor, error.path) : null;
      if (editor && line !== null) editor.addLineClass(line, "background", "tpl-error-line");
    }
  }

  // The line of a JSON path like $.user.names[1] in the editor's text, found key by key going down; a
  // good guess for pretty-printed JSON (null when a key is not found).
  function lineOfPath(editor, path) {
    const keys = [...path.matchAll(/\.([^.[]+)/g)].map((match) => JSON.stringify(match[1]));
    let line = 0;
    for (const key of keys) {
      while (line < editor.lineCount() && !editor.getLine(line).includes(`${key}:`)) line += 1;
      if (line >= editor.lineCount()) return null;
    }
    return keys.length ? line : null;
  }

  let timer = null;
  let sent = 0;

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, PREVIEW_DELAY_MS);
  }

  async function refresh() {
    rebuildSamples();
    const mine = ++sent;
    const flow = form.querySelector("select[name=flow]");
    const request = {
      body: fieldText("body"),
      variables: fieldText("variables"),
      schema: fieldText("schema"),
      sample: samples(),
      flow: flow ? flow.value : "",
    };
    statusLine.textContent = "Rendering…";
    let answer;
    try {
      const response = await fetch(preview.dataset.endpoint, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          "X-CSRF-Token": form.querySelector("input[name=csrf_token]").value,
        },
        body: JSON.stringify(request),
      });
      answer = await response.json();
      if (!response.ok && !answer.errors) {
        answer = { errors: [{ message: answer.message || answer.detail || `HTTP ${response.status}` }] };
      }
    } catch {
      answer = { errors: [{ message: "The preview could not be reached. Check your connection." }] };
    }
    if (mine !== sent) return; // a newer request is on its way
    if (answer.errors) {
      statusLine.textContent = `${answer.errors.length} problem(s): the avatar would not get this template.`;
      showErrors(answer.errors);
      output.classList.add("stale");
    } else {
      statusLine.textContent = "This is exactly what the avatar receives.";
      showErrors([]);
      output.textContent = answer.dpp;
      output.classList.remove("stale");
    }
  }

  if (form && preview) {
    for (const textarea of form.querySelectorAll("textarea[data-json-field]")) enhance(textarea);
    for (const textarea of form.querySelectorAll("textarea[data-json-field]")) {
      textarea.addEventListener("input", schedule); // when CodeMirror is unavailable
    }
    const flow = form.querySelector("select[name=flow]");
    if (flow) flow.addEventListener("change", schedule);
    refresh();
  }
})();
