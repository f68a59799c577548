// "Your status": the signed-in user's own presence. Sends SET_STATUS with the chosen status
// and status text (the SDK restores both after a reconnection) and reports the outcome.
import { STATUS_LABELS } from "./ui.js";

export class StatusForm {
  /**
   * @param {{ form: HTMLFormElement, select: HTMLSelectElement, input: HTMLInputElement, note: HTMLElement }} view
   * @param {(status: string) => void} onChange called once the server accepted a status
   */
  constructor(view, onChange) {
    this.view = view;
    this.onChange = onChange;
    view.form.addEventListener("submit", (event) => {
      event.preventDefault();
      void this.save();
    });
  }

  /** @param {import("/sdk/index.js").HeartlineClient | undefined} client */
  start(client) {
    this.client = client;
    this.view.select.value = "online";
    this.view.input.value = "";
    this.view.note.textContent = "";
  }

  async save() {
    if (!this.client) return;
    const status = this.view.select.value;
    const text = this.view.input.value.trim();
    const button = this.view.form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await this.client.setStatus(status, text);
      const seen = status === "invisible" ? "offline" : STATUS_LABELS[status].toLowerCase();
      this.view.note.textContent = `Saved. Your matches see you as ${seen}${text && status !== "invisible" ? `: “${text}”` : "."}`;
      this.onChange(status);
    } catch (error) {
      this.view.note.textContent = error.codeName === "RATE_LIMITED" ? "Too many changes at once: try again in a moment." : `Could not update: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  }
}
