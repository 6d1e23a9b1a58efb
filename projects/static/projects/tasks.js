// The tasks of one project, kept by realtime's ItemStore (idempotent by id and version), in board order.

import { ItemStore } from "../realtime/live.js";

export class TaskStore extends ItemStore {
  constructor(onChange) {
    super(onChange, { key: "tasks" });
  }

  get tasks() {
    return this.items;
  }

  /** Visible tasks of one status, in board order. */
  column(status) {
    return [...this.items.values()]
      .filter((t) => t.status === status && !t.archived)
      .sort((a, b) => a.task_order - b.task_order || a.created_at.localeCompare(b.created_at));
  }
}
