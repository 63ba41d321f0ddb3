// TodoMVC in plain DOM code: the model is an array, each change touches only
// the elements it concerns (one <li> added, toggled or removed).
const root = document.getElementById("app");
root.innerHTML = `
  <header class="header"><h1>todos</h1>
    <input class="new-todo" placeholder="What needs to be done?" autofocus></header>
  <section class="main" hidden><ul class="todo-list"></ul></section>
  <footer class="footer" hidden><span class="todo-count"></span>
    <button class="clear-completed">Clear completed</button></footer>`;

const list = root.querySelector(".todo-list");
const main = root.querySelector(".main");
const footer = root.querySelector(".footer");
const count = root.querySelector(".todo-count");
const todos = new Map();   // id -> {title, completed, li}
let nextId = 0;

function updateFooter() {
  let left = 0;
  for (const t of todos.values()) left += t.completed ? 0 : 1;
  count.innerHTML = `<strong>${left}</strong> item${left === 1 ? "" : "s"} left`;
  main.hidden = footer.hidden = todos.size === 0;
}

function add(title) {
  const id = nextId++;
  const li = document.createElement("li");
  li.dataset.id = id;
  const view = document.createElement("div");
  view.className = "view";
  const toggle = document.createElement("input");
  toggle.className = "toggle";
  toggle.type = "checkbox";
  const label = document.createElement("label");
  label.textContent = title;
  const destroy = document.createElement("button");
  destroy.className = "destroy";
  view.append(toggle, label, destroy);
  li.append(view);
  list.append(li);
  todos.set(id, { title, completed: false, li });
  updateFooter();
}

root.querySelector(".new-todo").addEventListener("keydown", (e) => {
  if (e.key !== "Enter") return;
  const title = e.target.value.trim();
  if (!title) return;
  e.target.value = "";
  add(title);
});

list.addEventListener("change", (e) => {
  if (!e.target.classList.contains("toggle")) return;
  const t = todos.get(Number(e.target.closest("li").dataset.id));
  t.completed = e.target.checked;
  t.li.classList.toggle("completed", t.completed);
  updateFooter();
});

list.addEventListener("click", (e) => {
  if (!e.target.classList.contains("destroy")) return;
  const id = Number(e.target.closest("li").dataset.id);
  todos.get(id).li.remove();
  todos.delete(id);
  updateFooter();
});

root.querySelector(".clear-completed").addEventListener("click", () => {
  for (const [id, t] of todos) {
    if (t.completed) {
      t.li.remove();
      todos.delete(id);
    }
  }
  updateFooter();
});

window.todoFramework = { name: "vanilla", version: "-" };
