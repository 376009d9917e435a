/**
 * Every endpoint the mini-program calls exists in the server's OpenAPI spec, with the
 * fields it sends and reads. The spec is the real one: EVC_OPENAPI_SPEC (a file), or made
 * here by the project's Python (../.venv) from the Flask app. Without Python the test is
 * skipped on a developer machine and FAILS in CI (CI=true).
 */
const fs = require('fs')
const path = require('path')
const { execFileSync } = require('child_process')
const api = require('../../utils/api')
const config = require('../../utils/config')
const { checkAll, hasField } = require('./check')

const REPO = path.join(__dirname, '../../..')

function loadSpec() {
  if (process.env.EVC_OPENAPI_SPEC) {
    return JSON.parse(fs.readFileSync(process.env.EVC_OPENAPI_SPEC, 'utf8'))
  }
  const venv = path.join(REPO, '.venv', 'bin', 'python')
  const python = fs.existsSync(venv) ? venv : 'python3'
  const code = 'import json, logging; logging.disable(logging.CRITICAL); from app import create_app; '
    + 'a = create_app(); print(json.dumps(a.test_client().get("/api/openapi.json").get_json()))'
  try {
    const out = execFileSync(python, ['-c', code], { cwd: REPO, encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'], timeout: 60000, env: { ...process.env, EVC_ENV: 'development' } })
    return JSON.parse(out.trim().split('\n').pop())
  } catch (err) {
    if (process.env.CI) throw new Error(`cannot build the OpenAPI spec with ${python}: ${err.message}`)
    return null
  }
}

const spec = loadSpec()
const maybe = spec ? describe : describe.skip
const result = spec ? checkAll(spec, api.ENDPOINTS, config.apiPrefix) : null

maybe('the API client against the server OpenAPI spec', () => {
  test('the spec is the evcharge API', () => {
    expect(spec.paths['/api/v1/charging-sessions']).toBeDefined()
  })

  test('every call exists with the fields it sends and reads', () => {
    expect(result.errors).toEqual([])
  })

  test('the checker itself catches a wrong field, path and query', () => {
    const broken = {
      a: { method: 'GET', path: '/charging-sessions/{id}', reads: ['energy_wh', 'no_such_field'] },
      b: { method: 'GET', path: '/nowhere', reads: [] },
      c: { method: 'GET', path: '/charging-sessions', query: ['colour'], reads: ['session_id'] },
      d: { method: 'POST', path: '/me/bindings', sends: ['community_id', 'pin_code'], reads: ['cards[].uid'] },
    }
    const r = checkAll(spec, broken)
    expect(r.errors.join('\n')).toMatch(/a: reads "no_such_field"/)
    expect(r.errors.join('\n')).toMatch(/b: GET \/api\/v1\/nowhere is not in the spec/)
    expect(r.errors.join('\n')).toMatch(/c: query parameter "colour"/)
    expect(r.errors.join('\n')).toMatch(/d: sends "pin_code"/)
    expect(r.errors.join('\n')).toMatch(/d: reads "cards\[\]\.uid"/)
    expect(r.errors).toHaveLength(5)
  })

  test('nested reads are followed through $ref and arrays', () => {
    const op = spec.paths['/api/v1/payments/wechat/orders'].post
    const schema = op.responses['201'].content['application/json'].schema
    expect(hasField(spec, schema, 'order.out_trade_no').ok).toBe(true)
    expect(hasField(spec, schema, 'order.nope').ok).toBe(false)
  })

  test('a nullable nested object (anyOf) is followed too', () => {
    const op = spec.paths['/api/v1/public/ports/{code}'].get
    const schema = op.responses['200'].content['application/json'].schema
    expect(hasField(spec, schema, 'tariff.rules')).toEqual({ ok: true })
    expect(hasField(spec, schema, 'tariff.nope').ok).toBe(false)
  })
})

// What the server does not have yet shows as "todo" in the summary (see README).
if (result) {
  result.pending.forEach((p) => test.todo(p.field
    ? `server: ${p.name} response lacks "${p.field}"`
    : `server: ${p.method} ${p.path} (${p.note})`))
  result.landed.forEach((name) => test.todo(`client: ${name} now exists on the server — drop its "pending" mark`))
}
