/**
 * Tariff rules (the server's stored JSON, app/domain/tariff.py) in plain Chinese, the
 * operator's simple tariff form, and a visitor's prepayment for a chosen duration.
 */
const fmt = require('./format')

const PERIOD_TEXT = { peak: '峰时', flat: '平时', valley: '谷时' }
const MODE_TEXT = { per_kwh: '按电量计费', per_hour: '按时长计费', power_tier: '按功率分档计时' }

function perKwh(fen) {
  return `${fmt.yuan(fen)} 元/度`
}

function perHour(fen) {
  return `${fmt.yuan(fen)} 元/小时`
}

/** The lines that describe a tariff; [] for nothing usable. */
function describe(rules) {
  if (!rules || typeof rules !== 'object' || !rules.mode) return []
  const lines = []
  const service = rules.service_fen_per_kwh || 0
  if (rules.mode === 'per_kwh') {
    if (Array.isArray(rules.tou) && rules.tou.length) {
      rules.tou.forEach((p) => {
        const total = p.energy_fen_per_kwh + service
        lines.push(`${PERIOD_TEXT[p.name] || p.name} ${p.start}–${p.end}：${perKwh(total)}`)
      })
      if (service) lines.push(`（含服务费 ${perKwh(service)}）`)
    } else if (Number.isInteger(rules.energy_fen_per_kwh)) {
      lines.push(perKwh(rules.energy_fen_per_kwh + service))
      if (service) {
        lines.push(`电费 ${perKwh(rules.energy_fen_per_kwh)} + 服务费 ${perKwh(service)}`)
      }
    }
  } else if (rules.mode === 'per_hour') {
    lines.push(perHour(rules.fen_per_hour))
  } else if (rules.mode === 'power_tier') {
    (rules.power_bands || []).forEach((b) => {
      lines.push(`${b.min_w}–${b.max_w} W：${perHour(b.fen_per_hour)}`)
    })
  }
  if (rules.mode !== 'per_kwh' && rules.billing_unit_minutes) {
    lines.push(`每 ${rules.billing_unit_minutes} 分钟计费一次，不足按一次计`)
  }
  if (rules.free_minutes) lines.push(`前 ${rules.free_minutes} 分钟免费`)
  if (rules.minimum_charge_fen) lines.push(`最低消费 ${fmt.yuan(rules.minimum_charge_fen)} 元`)
  if (rules.max_session_minutes) {
    const h = Math.floor(rules.max_session_minutes / 60)
    const m = rules.max_session_minutes % 60
    lines.push(`单次最长 ${h ? `${h} 小时` : ''}${m ? `${m} 分钟` : ''}`)
  }
  return lines
}

/** One line, for lists: "1.00 元/度" or "按功率分档计时". */
function headline(rules) {
  if (!rules || !rules.mode) return '资费以充电桩显示为准'
  if (rules.mode === 'per_kwh' && Number.isInteger(rules.energy_fen_per_kwh)) {
    return perKwh(rules.energy_fen_per_kwh + (rules.service_fen_per_kwh || 0))
  }
  if (rules.mode === 'per_hour') return perHour(rules.fen_per_hour)
  return MODE_TEXT[rules.mode] || '资费以充电桩显示为准'
}

function ceilDiv(a, b) {
  return Math.floor((a + b - 1) / b)
}

/**
 * What a visitor prepays to charge `minutes` (the server refunds what is not used).
 * Energy tariffs assume `assumedPowerW` (a typical e-bike charger draws 150–400 W).
 */
function prepayFor(rules, minutes, assumedPowerW = 400) {
  if (!rules || !Number.isInteger(minutes) || minutes <= 0) return null
  let fen = null
  if (rules.mode === 'per_hour') {
    fen = ceilDiv(rules.fen_per_hour * minutes, 60)
  } else if (rules.mode === 'power_tier' && (rules.power_bands || []).length) {
    const top = Math.max(...rules.power_bands.map((b) => b.fen_per_hour))
    fen = ceilDiv(top * minutes, 60)
  } else if (rules.mode === 'per_kwh') {
    const prices = Array.isArray(rules.tou) && rules.tou.length
      ? rules.tou.map((p) => p.energy_fen_per_kwh) : [rules.energy_fen_per_kwh]
    const price = Math.max(...prices) + (rules.service_fen_per_kwh || 0)
    const wh = ceilDiv(assumedPowerW * minutes, 60)
    fen = ceilDiv(price * wh, 1000)
  }
  if (fen == null || !Number.isInteger(fen)) return null
  return Math.max(fen, rules.minimum_charge_fen || 0, 100)
}

/** The operator's simple form from stored rules (null when the tariff is too complex). */
function formFromRules(rules) {
  if (!rules || !rules.mode) return null
  const common = {
    free_minutes: String(rules.free_minutes || 0),
    minimum_yuan: fmt.yuan(rules.minimum_charge_fen || 0),
    max_hours: rules.max_session_minutes ? String(Math.floor(rules.max_session_minutes / 60)) : '',
  }
  if (rules.mode === 'per_kwh' && Number.isInteger(rules.energy_fen_per_kwh)) {
    return { mode: 'per_kwh', energy_yuan: fmt.yuan(rules.energy_fen_per_kwh),
      service_yuan: fmt.yuan(rules.service_fen_per_kwh || 0), ...common }
  }
  if (rules.mode === 'per_hour') {
    return { mode: 'per_hour', hour_yuan: fmt.yuan(rules.fen_per_hour),
      unit_minutes: rules.billing_unit_minutes ? String(rules.billing_unit_minutes) : '',
      ...common }
  }
  return null
}

function wholeNumber(text, low, high) {
  const s = String(text == null ? '' : text).trim()
  if (!/^\d{1,5}$/.test(s)) return null
  const n = parseInt(s, 10)
  return n >= low && n <= high ? n : null
}

/** Rules from the form: {rules} or {error} (Chinese). The server validates again. */
function rulesFromForm(form) {
  const f = form || {}
  const rules = { mode: f.mode }
  if (f.mode === 'per_kwh') {
    const energy = fmt.parseYuan(f.energy_yuan)
    const service = fmt.parseYuan(f.service_yuan || '0')
    if (energy == null || energy > 10000) return { error: '请填写正确的电价（元/度）' }
    if (service == null || service > 10000) return { error: '请填写正确的服务费（元/度）' }
    rules.energy_fen_per_kwh = energy
    rules.service_fen_per_kwh = service
  } else if (f.mode === 'per_hour') {
    const hour = fmt.parseYuan(f.hour_yuan)
    if (hour == null || hour > 100000) return { error: '请填写正确的小时价格（元/小时）' }
    rules.fen_per_hour = hour
    if (f.unit_minutes) {
      const unit = wholeNumber(f.unit_minutes, 1, 1440)
      if (unit == null) return { error: '计费单位应为 1–1440 分钟' }
      rules.billing_unit_minutes = unit
    }
  } else {
    return { error: '请选择计费方式' }
  }
  const free = wholeNumber(f.free_minutes || '0', 0, 1440)
  if (free == null) return { error: '免费分钟数应为 0–1440' }
  if (free) rules.free_minutes = free
  const minimum = fmt.parseYuan(f.minimum_yuan || '0')
  if (minimum == null || minimum > 100000) return { error: '请填写正确的最低消费' }
  if (minimum) rules.minimum_charge_fen = minimum
  if (f.max_hours) {
    const hours = wholeNumber(f.max_hours, 1, 72)
    if (hours == null) return { error: '单次最长时长应为 1–72 小时' }
    rules.max_session_minutes = hours * 60
  }
  return { rules }
}

/** The version in force at `now` among versions listed newest first (GET …/tariffs). */
function inForce(versions, now = Date.now()) {
  return (versions || []).find((v) => Date.parse(v.effective_from) <= now) || null
}

module.exports = { inForce, describe, headline, prepayFor, formFromRules, rulesFromForm, MODE_TEXT,
  PERIOD_TEXT }
