/**
 * Formatting for people: money, durations, power, energy, distances, times.
 *
 * Money is integer fen everywhere. Yuan are only ever produced as text, by integer
 * division, so no floating-point amount exists anywhere in the logic.
 */

function isInt(n) {
  return typeof n === 'number' && Number.isInteger(n)
}

function pad(n, width = 2) {
  return String(n).padStart(width, '0')
}

/** 1234 → "12.34", -5 → "-0.05"; anything not an integer → "--". */
function yuan(fen) {
  if (!isInt(fen)) return '--'
  const sign = fen < 0 ? '-' : ''
  const abs = Math.abs(fen)
  return `${sign}${Math.floor(abs / 100)}.${pad(abs % 100)}`
}

/** "¥12.34". */
function money(fen) {
  const text = yuan(fen)
  return text === '--' ? text : `¥${text}`
}

/** "+12.34" / "-12.34" / "0.00". */
function signedYuan(fen) {
  if (!isInt(fen)) return '--'
  return fen > 0 ? `+${yuan(fen)}` : yuan(fen)
}

/**
 * What a person typed ("12", "12.5", "12.50") → integer fen, or null when it is not a
 * plain non-negative amount with at most two decimals. Parsed as text, never as a float.
 */
function parseYuan(text) {
  const s = String(text == null ? '' : text).trim()
  const m = /^(\d{1,7})(?:\.(\d{0,2}))?$/.exec(s)
  if (!m) return null
  const frac = (m[2] || '').padEnd(2, '0')
  return parseInt(m[1], 10) * 100 + parseInt(frac, 10)
}

/** Seconds → "1小时05分" / "12分30秒" / "45秒"; null → "--". */
function duration(seconds) {
  if (!isInt(seconds) || seconds < 0) return '--'
  const h = Math.floor(seconds / 3600)
  const m = Math.floor((seconds % 3600) / 60)
  const s = seconds % 60
  if (h > 0) return `${h}小时${pad(m)}分`
  if (m > 0) return `${m}分${pad(s)}秒`
  return `${s}秒`
}

/** Seconds → "01:05:09" (a running clock). */
function clock(seconds) {
  if (!isInt(seconds) || seconds < 0) return '--:--:--'
  const h = Math.floor(seconds / 3600)
  const m = Math.floor((seconds % 3600) / 60)
  return `${pad(h)}:${pad(m)}:${pad(seconds % 60)}`
}

/** Watts → "180 W", or "1.25 kW" from 1000 W (rounded half up to 10 W). */
function power(watts) {
  if (!isInt(watts) || watts < 0) return '--'
  if (watts < 1000) return `${watts} W`
  const tens = Math.floor((watts + 5) / 10) // hundredths of a kW
  return `${Math.floor(tens / 100)}.${pad(tens % 100)} kW`
}

/** Watt-hours → "1.25 度" (kWh, rounded half up to 0.01). */
function energy(wh) {
  if (!isInt(wh) || wh < 0) return '--'
  const hundredths = Math.floor((wh + 5) / 10)
  return `${Math.floor(hundredths / 100)}.${pad(hundredths % 100)} 度`
}

/** Metres → "850 米" / "1.2 公里"; 10 km and more without decimals. */
function distance(metres) {
  if (typeof metres !== 'number' || !Number.isFinite(metres) || metres < 0) return ''
  const m = Math.round(metres)
  if (m < 1000) return `${m} 米`
  if (m < 10000) {
    const tenths = Math.round(m / 100)
    return `${Math.floor(tenths / 10)}.${tenths % 10} 公里`
  }
  return `${Math.round(m / 1000)} 公里`
}

const BEIJING_OFFSET_MS = 8 * 3600 * 1000

/** The Beijing wall-clock parts of an ISO timestamp (the communities are in China). */
function beijingParts(iso) {
  if (!iso) return null
  const ms = Date.parse(iso)
  if (Number.isNaN(ms)) return null
  const d = new Date(ms + BEIJING_OFFSET_MS)
  return { y: d.getUTCFullYear(), mo: d.getUTCMonth() + 1, d: d.getUTCDate(),
    h: d.getUTCHours(), mi: d.getUTCMinutes(), s: d.getUTCSeconds() }
}

/** ISO → "2025-11-24 18:05" (Beijing time). */
function dateTime(iso) {
  const p = beijingParts(iso)
  if (!p) return '--'
  return `${p.y}-${pad(p.mo)}-${pad(p.d)} ${pad(p.h)}:${pad(p.mi)}`
}

/** ISO → "11-24 18:05" (Beijing time). */
function shortDateTime(iso) {
  const p = beijingParts(iso)
  if (!p) return '--'
  return `${pad(p.mo)}-${pad(p.d)} ${pad(p.h)}:${pad(p.mi)}`
}

/** The Beijing calendar day "YYYY-MM-DD" of an ISO time or a Date / epoch ms. */
function beijingDay(when) {
  const iso = when instanceof Date ? when.toISOString()
    : typeof when === 'number' ? new Date(when).toISOString() : when
  const p = beijingParts(iso)
  return p ? `${p.y}-${pad(p.mo)}-${pad(p.d)}` : ''
}

/** Mask an account / phone number: "13900000001" → "139****0001". */
function maskNumber(no) {
  const s = String(no || '')
  if (s.length < 7) return s
  return `${s.slice(0, 3)}****${s.slice(-4)}`
}

module.exports = { yuan, money, signedYuan, parseYuan, duration, clock, power, energy,
  distance, dateTime, shortDateTime, beijingDay, maskNumber, pad }
