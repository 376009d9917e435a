/**
 * The mini-program's wiring, checked without DevTools: every page in app.json exists with
 * its four files, components resolve, every handler a template binds is a method, only
 * utils/api.js talks to the network, and every api.* a page calls exists.
 */
const fs = require('fs')
const path = require('path')

const ROOT = path.join(__dirname, '../..')
const app = JSON.parse(fs.readFileSync(path.join(ROOT, 'app.json'), 'utf8'))

function read(rel) {
  return fs.readFileSync(path.join(ROOT, rel), 'utf8')
}

function walk(dir) {
  return fs.readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((d) => {
    const rel = path.join(dir, d.name)
    return d.isDirectory() ? walk(rel) : [rel]
  })
}

/** The definition a page/component file passes to Component(). */
function definitionOf(rel) {
  let captured = null
  const saved = global.Component
  global.Component = (def) => { captured = def }
  try {
    jest.isolateModules(() => require(path.join(ROOT, rel)))
  } finally {
    global.Component = saved
  }
  return captured
}

const pages = app.pages
const components = walk('components').filter((f) => f.endsWith('.json')).map((f) => f.replace(/\.json$/, ''))

test.each(pages)('page %s has js, json, wxml and wxss, built with Component()', (page) => {
  for (const ext of ['js', 'json', 'wxml', 'wxss']) {
    expect(fs.existsSync(path.join(ROOT, `${page}.${ext}`))).toBe(true)
  }
  expect(read(`${page}.js`)).toMatch(/\bComponent\(\{/)
  expect(JSON.parse(read(`${page}.json`)).usingComponents).toBeDefined()
})

test('the tab bar lists pages that exist', () => {
  app.tabBar.list.forEach((tab) => expect(pages).toContain(tab.pagePath))
})

test.each([...pages, ...components])('%s: its components resolve and its handlers exist', (unit) => {
  const json = JSON.parse(read(`${unit}.json`))
  Object.values(json.usingComponents || {}).forEach((target) => {
    const abs = target.startsWith('/') ? path.join(ROOT, target) : path.join(ROOT, path.dirname(unit), target)
    expect(fs.existsSync(`${abs}.json`)).toBe(true)
  })
  const def = definitionOf(`${unit}.js`)
  expect(def).toBeTruthy()
  const methods = Object.keys(def.methods || {})
  const handlers = [...read(`${unit}.wxml`).matchAll(/\b(?:bind|catch):?\w+="([^"{}]+)"/g)].map((m) => m[1])
  handlers.forEach((h) => expect(methods).toContain(h))
})

test('only utils/api.js calls wx.request', () => {
  const offenders = [...walk('pages'), ...walk('components'), ...walk('utils'), 'app.js']
    .filter((f) => f.endsWith('.js') && f !== path.join('utils', 'api.js'))
    .filter((f) => /wx\.request\s*\(/.test(read(f)))
  expect(offenders).toEqual([])
})

test('every api.* a page calls is in the API client', () => {
  const api = require('../../utils/api')
  const used = new Set()
  walk('pages').concat(walk('utils')).filter((f) => f.endsWith('.js')).forEach((f) => {
    for (const m of read(f).matchAll(/\bapi\.(\w+)\(/g)) used.add(m[1])
  })
  const missing = [...used].filter((name) => typeof api[name] !== 'function')
  expect(missing).toEqual([])
  expect(used.size).toBeGreaterThan(25)
})

test('no floats for money: no parseFloat / toFixed in the code', () => {
  const files = [...walk('pages'), ...walk('utils'), ...walk('components')].filter((f) => f.endsWith('.js'))
  files.forEach((f) => {
    expect([f, /parseFloat\(|toFixed\(|Number\(.*yuan/.test(read(f))]).toEqual([f, false])
  })
})
