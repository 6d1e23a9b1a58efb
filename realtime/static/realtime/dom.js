// Small DOM helpers shared by the pages.

export const $ = (selector, root = document) => root.querySelector(selector);

/** An element with attributes ("class" sets className, "dataset" an object of data-*) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

/** Show `message` in `node`, or hide the node when there is none. */
export function say(node, message) {
  node.textContent = message || "";
  node.hidden = !message;
}
