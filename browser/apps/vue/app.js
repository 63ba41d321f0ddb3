// TodoMVC in Vue 3 (options API, template compiled in the page): reactive
// state, one component per item.
import { createApp, version } from "vue";

const TodoItem = {
  props: ["todo"],
  emits: ["toggle", "destroy"],
  template: `
    <li :class="{ completed: todo.completed }">
      <div class="view">
        <input class="toggle" type="checkbox" :checked="todo.completed" @change="$emit('toggle', todo)">
        <label>{{ todo.title }}</label>
        <button class="destroy" @click="$emit('destroy', todo)"></button>
      </div>
    </li>`,
};

createApp({
  components: { TodoItem },
  data: () => ({ todos: [], nextId: 0 }),
  computed: {
    remaining() { return this.todos.filter((t) => !t.completed).length; },
  },
  methods: {
    add(e) {
      const title = e.target.value.trim();
      if (!title) return;
      e.target.value = "";
      this.todos.push({ id: this.nextId++, title, completed: false });
    },
    toggle(todo) { todo.completed = !todo.completed; },
    destroy(todo) { this.todos.splice(this.todos.indexOf(todo), 1); },
    clear() { this.todos = this.todos.filter((t) => !t.completed); },
  },
  template: `
    <header class="header"><h1>todos</h1>
      <input class="new-todo" placeholder="What needs to be done?" autofocus @keydown.enter="add"></header>
    <section class="main" v-show="todos.length">
      <ul class="todo-list">
        <todo-item v-for="t in todos" :key="t.id" :todo="t" @toggle="toggle" @destroy="destroy"></todo-item>
      </ul>
    </section>
    <footer class="footer" v-show="todos.length">
      <span class="todo-count"><strong>{{ remaining }}</strong> item{{ remaining === 1 ? "" : "s" }} left</span>
      <button class="clear-completed" @click="clear">Clear completed</button>
    </footer>`,
}).mount("#app");
window.todoFramework = { name: "vue", version };
