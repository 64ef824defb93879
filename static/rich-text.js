// A small rich-text editor over any <textarea data-rich-text>: bold, italics and
// links, written back to the textarea as HTML. The server sanitizes it on save,
// and without this file the textarea takes plain text or simple HTML as typed.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("textarea[data-rich-text]").forEach((textarea) => {
    const editor = document.createElement("div");
    editor.className = "rich-editor";
    editor.contentEditable = "true";
    editor.setAttribute("role", "textbox");
    editor.setAttribute("aria-multiline", "true");
    editor.setAttribute("aria-label", textarea.dataset.label || "");
    editor.innerHTML = textarea.value;

    const toolbar = document.createElement("div");
    toolbar.className = "rich-toolbar";
    const actions = [
      ["bold", textarea.dataset.bold || "B"],
      ["italic", textarea.dataset.italic || "I"],
      ["createLink", textarea.dataset.link || "Link"],
    ];
    actions.forEach(([command, label]) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary";
      button.textContent = label;
      button.addEventListener("click", () => {
        editor.focus();
        if (command === "createLink") {
          const url = window.prompt(textarea.dataset.linkPrompt || "URL", "https://");
          if (url && /^(https?:|mailto:)/i.test(url)) document.execCommand(command, false, url);
        } else {
          document.execCommand(command);
        }
      });
      toolbar.appendChild(button);
    });

    textarea.hidden = true;
    textarea.required = false;
    textarea.after(toolbar, editor);
    textarea.form.addEventListener("submit", () => {
      textarea.value = editor.innerHTML;
    });
  });
});
