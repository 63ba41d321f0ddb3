// TodoMVC in jQuery: delegated events on the list, and the whole list
// rendered again from the model after every change, as jQuery apps do.
import $ from "jquery";

const todos = [];
let nextId = 0;

const escape = (s) => $("<div>").text(s).html();

function render() {
  $(".todo-list").html(todos.map((t) => `
    <li data-id="${t.id}" class="${t.completed ? "completed" : ""}">
      <div class="view"><input class="toggle" type="checkbox" ${t.completed ? "checked" : ""}>
        <label>${escape(t.title)}</label><button class="destroy"></button></div>
    </li>`).join(""));
  const left = todos.filter((t) => !t.completed).length;
  $(".todo-count").html(`<strong>${left}</strong> item${left === 1 ? "" : "s"} left`);
  $(".main, .footer").toggle(todos.length > 0);
}

const indexOf = (el) => {
  const id = Number($(el).closest("li").data("id"));
  return todos.findIndex((t) => t.id === id);
};

$("#app").html(`
  <header class="header"><h1>todos</h1>
    <input class="new-todo" placeholder="What needs to be done?" autofocus></header>
  <section class="main"><ul class="todo-list"></ul></section>
  <footer class="footer"><span class="todo-count"></span>
    <button class="clear-completed">Clear completed</button></footer>`);

$(".new-todo").on("keydown", (e) => {
  if (e.key !== "Enter") return;
  const title = $(e.target).val().trim();
  if (!title) return;
  $(e.target).val("");
  todos.push({ id: nextId++, title, completed: false });
  render();
});
$(".todo-list")
  .on("change", ".toggle", (e) => {
    const t = todos[indexOf(e.target)];
    t.completed = !t.completed;
    render();
  })
  .on("click", ".destroy", (e) => {
    todos.splice(indexOf(e.target), 1);
    render();
  });
$(".clear-completed").on("click", () => {
  todos.splice(0, todos.length, ...todos.filter((t) => !t.completed));
  render();
});
render();
window.todoFramework = { name: "jquery", version: $.fn.jquery };
