/**
 * Check the API client's ENDPOINTS table against the server's OpenAPI document: each call
 * exists (method + path), is authenticated as the client expects, sends only fields the
 * request schema has, uses only query parameters the server declares, and every response
 * field the pages read is in the response schema. Used by the jest contract test and by
 * the flow test against the live server.
 */

function deref(spec, schema, seen = new Set()) {
  let s = schema || {}
  while (s && s.$ref) {
    if (seen.has(s.$ref)) break
    seen.add(s.$ref)
    const name = s.$ref.replace('#/components/schemas/', '')
    s = (spec.components && spec.components.schemas && spec.components.schemas[name]) || {}
  }
  if (s && Array.isArray(s.allOf)) {
    const merged = { type: 'object', properties: {}, required: [] }
    s.allOf.forEach((part) => {
      const p = deref(spec, part, seen)
      Object.assign(merged.properties, p.properties || {})
      merged.required.push(...(p.required || []))
      if (p.type === 'array') Object.assign(merged, p)
    })
    return merged
  }
  const alternatives = s && (s.anyOf || s.oneOf)
  if (Array.isArray(alternatives)) {
    // e.g. a nullable nested object: anyOf [{$ref}, {type: object, nullable: true}]. A field
    // is there if one of the alternatives has it.
    const merged = { type: 'object', properties: {} }
    let array = null
    alternatives.forEach((part) => {
      const p = deref(spec, part, new Set(seen))
      Object.assign(merged.properties, p.properties || {})
      if (p.type === 'array' && !array) array = p
    })
    if (Object.keys(merged.properties).length) return merged
    return array || {}
  }
  return s || {}
}

const normalize = (p) => p.replace(/\{[^}]+\}/g, '{}')

function findOperation(spec, method, path) {
  const wanted = normalize(path)
  const key = Object.keys(spec.paths || {}).find((p) => normalize(p) === wanted)
  if (!key) return null
  return spec.paths[key][method.toLowerCase()] || null
}

function jsonSchema(content) {
  if (!content) return null
  const json = content['application/json']
  return json ? json.schema || {} : null
}

function successResponse(op) {
  const codes = Object.keys(op.responses || {}).filter((c) => /^2\d\d$/.test(c)).sort()
  if (!codes.length) return { code: null, schema: null }
  const res = op.responses[codes[0]]
  return { code: codes[0], schema: jsonSchema(res.content) }
}

/** Whether a dotted field path ("balance.available_fen", "cards[].id") is in the schema. */
function hasField(spec, schema, dotted) {
  let s = deref(spec, schema)
  if (s.type === 'array') s = deref(spec, s.items)
  const parts = dotted.split('.')
  for (let i = 0; i < parts.length; i += 1) {
    const many = parts[i].endsWith('[]')
    const name = many ? parts[i].slice(0, -2) : parts[i]
    const props = s.properties || {}
    if (!(name in props)) return { ok: false }
    let next = deref(spec, props[name])
    const last = i === parts.length - 1
    if (many) {
      if (next.type !== 'array') return { ok: false }
      next = deref(spec, next.items)
    }
    if (!last && !next.properties && !next.items && (!next.type || next.type === 'object')) {
      // declared without a schema (e.g. a marshmallow Method field): present, contents unknown
      return { ok: true, untyped: parts.slice(0, i + 1).join('.') }
    }
    s = next
  }
  return { ok: true }
}

function checkEndpoint(spec, prefix, name, ep) {
  const problems = []
  const notes = []
  const path = `${prefix}${ep.path}`
  const op = findOperation(spec, ep.method, path)
  if (!op) return { missing: true, problems, notes }
  if (ep.auth !== false && !(op.security && op.security.length)) {
    problems.push(`${name}: ${ep.method} ${path} is not declared authenticated in the spec`)
  }
  const body = op.requestBody ? deref(spec, jsonSchema(op.requestBody.content)) : null
  ;(ep.sends || []).forEach((field) => {
    if (!body || !(field in (body.properties || {}))) {
      problems.push(`${name}: sends "${field}" but the request schema has no such field`)
    }
  })
  const params = (op.parameters || []).filter((p) => p.in === 'query').map((p) => p.name)
  ;(ep.query || []).forEach((q) => {
    if (!params.includes(q)) problems.push(`${name}: query parameter "${q}" is not declared`)
  })
  const { code, schema } = successResponse(op)
  if (!code) problems.push(`${name}: no 2xx response declared`)
  const check = (field, pending) => {
    if (!schema) {
      problems.push(`${name}: reads "${field}" but ${code} has no JSON body`)
      return
    }
    const found = hasField(spec, schema, field)
    if (!found.ok) {
      if (pending) notes.push({ name, field, pending: true })
      else problems.push(`${name}: reads "${field}", not in the ${code} response schema`)
    } else if (found.untyped) {
      notes.push({ name, field, untyped: found.untyped })
    }
  }
  ;(ep.reads || []).forEach((f) => check(f, false))
  ;(ep.pendingReads || []).forEach((f) => check(f, true))
  return { missing: false, problems, notes }
}

/**
 * {errors: [text], pending: [{name, method, path, note}|{name, field}], untyped: [...],
 *  landed: [names of pending endpoints the server now has]}
 */
function checkAll(spec, endpoints, prefix = '/api/v1') {
  const out = { errors: [], pending: [], untyped: [], landed: [] }
  Object.entries(endpoints).forEach(([name, ep]) => {
    const r = checkEndpoint(spec, prefix, name, ep)
    if (r.missing) {
      if (ep.pending) out.pending.push({ name, method: ep.method, path: `${prefix}${ep.path}`, note: ep.pending })
      else out.errors.push(`${name}: ${ep.method} ${prefix}${ep.path} is not in the spec`)
      return
    }
    if (ep.pending) out.landed.push(name)
    out.errors.push(...r.problems)
    r.notes.forEach((n) => (n.pending ? out.pending.push({ name, field: n.field })
      : out.untyped.push(`${name}.${n.field} (${n.untyped} has no schema)`)))
  })
  return out
}

module.exports = { checkAll, checkEndpoint, hasField, findOperation, deref }
