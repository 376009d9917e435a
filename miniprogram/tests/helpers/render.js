/**
 * Rendering pages and components with miniprogram-simulate (j-component + the official
 * WXML compiler). Pages are built with Component(), so they load like components; their
 * lifecycle methods (onLoad, onShow…) are called by the test, as the framework would.
 */
const path = require('path')
const simulate = require('miniprogram-simulate')
const { createWx, routes } = require('./wx-mock')

const ROOT = path.join(__dirname, '../..')

const overrides = {}

/** Settings for utils/config.js, applied to every page rendered after this. */
function configure(values) {
  Object.assign(overrides, values)
}

/**
 * Load and render a page or component. simulate runs each file's JS with require(), which
 * jest caches, so a component shared by two pages would register only once: the module
 * registry is reset first (tokens live in wx storage, so every api instance sees them).
 */
function render(unit, props) {
  jest.resetModules()
  Object.assign(require('../../utils/config'), overrides)
  const id = simulate.load(path.join(ROOT, unit), { rootPath: ROOT })
  const comp = simulate.render(id, props)
  comp.attach(document.createElement('parent-wrapper'))
  return comp
}

/** A fresh wx answering `table` (see wx-mock routes), logged in as `role`. */
function serve(table, { role = 'resident' } = {}) {
  global.wx = createWx({ handler: routes(table) })
  const api = require('../../utils/api')
  api.setTokens({ access_token: 'T', refresh_token: 'R', role, user_id: 1 })
  return global.wx
}

/** Let promises and zero-delay timers run. */
async function settle(rounds = 20) {
  for (let i = 0; i < rounds; i += 1) await simulate.sleep(0)
}

function text(comp) {
  return comp.dom.textContent.replace(/\s+/g, ' ')
}

/** Tap what `selector` matches (exparser delivers events asynchronously: then settle). */
async function tap(comp, selector) {
  const node = comp.querySelector(selector)
  if (!node) throw new Error(`nothing matches ${selector}`)
  node.dispatchEvent('tap')
  await settle()
}

/** Tap option `index` of the amount-picker with id `pickerId`. */
async function pick(comp, pickerId, index) {
  const picker = comp.querySelector(`#${pickerId}`)
  if (!picker) throw new Error(`no picker #${pickerId}`)
  if (!picker.querySelectorAll('.chip')[index]) throw new Error(`picker #${pickerId} has ${picker.querySelectorAll('.chip').length} options: ${picker.dom.outerHTML}`)
  picker.querySelectorAll('.chip')[index].dispatchEvent('tap')
  await settle()
}

module.exports = { configure, render, serve, settle, text, tap, pick, simulate, ROOT }
