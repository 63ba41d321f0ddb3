// TodoMVC in React 19 (hooks, createRoot): state is an immutable array,
// updates are functional so that a burst of events batches correctly.
import { useRef, useState, version } from "react";
import { createRoot } from "react-dom/client";

function TodoItem({ todo, onToggle, onDestroy }) {
  return (
    <li className={todo.completed ? "completed" : ""}>
      <div className="view">
        <input className="toggle" type="checkbox" checked={todo.completed}
               onChange={() => onToggle(todo.id)} />
        <label>{todo.title}</label>
        <button className="destroy" onClick={() => onDestroy(todo.id)} />
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
      <header className="header">
        <h1>todos</h1>
        <input className="new-todo" placeholder="What needs to be done?" onKeyDown={onKeyDown}
               autoFocus />
      </header>
      {todos.length > 0 && (
        <section className="main">
          <ul className="todo-list">
            {todos.map((t) => (
              <TodoItem key={t.id} todo={t} onToggle={toggle} onDestroy={destroy} />
            ))}
          </ul>
        </section>
      )}
      {todos.length > 0 && (
        <footer className="footer">
          <span className="todo-count"><strong>{left}</strong> item{left === 1 ? "" : "s"} left</span>
          <button className="clear-completed" onClick={clear}>Clear completed</button>
        </footer>
      )}
    </>
  );
}

createRoot(document.getElementById("app")).render(<App />);
window.todoFramework = { name: "react", version };
