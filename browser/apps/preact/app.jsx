// TodoMVC in Preact 10 (hooks, render): state is an immutable array,
// updates are functional so that a burst of events batches correctly.
import { render } from "preact";
import { useRef, useState } from "preact/hooks";

function TodoItem({ todo, onToggle, onDestroy }) {
  return (
    <li class={todo.completed ? "completed" : ""}>
      <div class="view">
        <input class="toggle" type="checkbox" checked={todo.completed}
               onChange={() => onToggle(todo.id)} />
        <label>{todo.title}</label>
        <button class="destroy" onClick={() => onDestroy(todo.id)} />
      </div>
    </li>
  );
}

function App() {
  const [todos, setTodos] = useState([]);
  const nextId = useRef(0);
  const onKeyDown = (e) => {
    if (e.key !== "Enter") return;
    const title = e.target.value.trim();
    if (!title) return;
    e.target.value = "";
    const id = nextId.current++;
    setTodos((ts) => [...ts, { id, title, completed: false }]);
  };
  const toggle = (id) =>
    setTodos((ts) => ts.map((t) => (t.id === id ? { ...t, completed: !t.completed } : t)));
  const destroy = (id) => setTodos((ts) => ts.filter((t) => t.id !== id));
  const clear = () => setTodos((ts) => ts.filter((t) => !t.completed));
  const left = todos.filter((t) => !t.completed).length;
  return (
    <>
      <header class="header">
        <h1>todos</h1>
        <input class="new-todo" placeholder="What needs to be done?" onKeyDown={onKeyDown}
               autofocus />
      </header>
      {todos.length > 0 && (
        <section class="main">
          <ul class="todo-list">
            {todos.map((t) => (
              <TodoItem key={t.id} todo={t} onToggle={toggle} onDestroy={destroy} />
            ))}
          </ul>
        </section>
      )}
      {todos.length > 0 && (
        <footer class="footer">
          <span class="todo-count"><strong>{left}</strong> item{left === 1 ? "" : "s"} left</span>
          <button class="clear-completed" onClick={clear}>Clear completed</button>
        </footer>
      )}
    </>
  );
}

render(<App />, document.getElementById("app"));
window.todoFramework = { name: "preact", version: FRAMEWORK_VERSION };
