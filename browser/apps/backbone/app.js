// TodoMVC in Backbone: a model per todo, a collection, a view per item that
// renders itself when its model changes, and an app view over the collection.
import Backbone from "backbone";
import $ from "jquery";
import _ from "underscore";

Backbone.$ = $;

const Todo = Backbone.Model.extend({
  defaults: { title: "", completed: false },
  toggle() { this.set("completed", !this.get("completed")); },
});

const Todos = Backbone.Collection.extend({
  model: Todo,
  remaining() { return this.where({ completed: false }).length; },
});

const itemTemplate = _.template(`
  <div class="view"><input class="toggle" type="checkbox" <%= completed ? "checked" : "" %>>
    <label><%- title %></label><button class="destroy"></button></div>`);

const TodoView = Backbone.View.extend({
  tagName: "li",
  events: { "change .toggle": "toggle", "click .destroy": "clear" },
  initialize() {
    this.listenTo(this.model, "change", this.render);
    this.listenTo(this.model, "destroy", this.remove);
  },
  render() {
    this.$el.html(itemTemplate(this.model.toJSON()));
    this.$el.toggleClass("completed", this.model.get("completed"));
    return this;
  },
  toggle() { this.model.toggle(); },
  clear() { this.model.destroy(); },
});

const AppView = Backbone.View.extend({
  el: "#app",
  events: { "keydown .new-todo": "create", "click .clear-completed": "clearCompleted" },
  initialize() {
    this.$el.html(`
      <header class="header"><h1>todos</h1>
        <input class="new-todo" placeholder="What needs to be done?" autofocus></header>
      <section class="main"><ul class="todo-list"></ul></section>
      <footer class="footer"><span class="todo-count"></span>
        <button class="clear-completed">Clear completed</button></footer>`);
    this.todos = new Todos();
    this.$list = this.$(".todo-list");
    this.listenTo(this.todos, "add", this.addOne);
    this.listenTo(this.todos, "update change:completed", this.render);
    this.render();
  },
  render() {
    const left = this.todos.remaining();
    this.$(".todo-count").html(`<strong>${left}</strong> item${left === 1 ? "" : "s"} left`);
    this.$(".main, .footer").toggle(this.todos.length > 0);
  },
  addOne(todo) { this.$list.append(new TodoView({ model: todo }).render().el); },
  create(e) {
    if (e.key !== "Enter") return;
    const title = e.target.value.trim();
    if (!title) return;
    e.target.value = "";
    this.todos.add({ title });
  },
  clearCompleted() { _.invoke(this.todos.where({ completed: true }), "destroy"); },
});

new AppView();
window.todoFramework = { name: "backbone", version: Backbone.VERSION };
