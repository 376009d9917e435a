/** Distances on the Earth for "nearest community" (haversine, metres). */

const EARTH_RADIUS_M = 6371008.8

function toRad(deg) {
  return (deg * Math.PI) / 180
}

function hasCoords(p) {
  return !!p && typeof p.lat === 'number' && typeof p.lng === 'number'
    && Number.isFinite(p.lat) && Number.isFinite(p.lng)
}

/** Great-circle distance in metres between {lat, lng} points; null if one has none. */
function haversine(a, b) {
  if (!hasCoords(a) || !hasCoords(b)) return null
  const dLat = toRad(b.lat - a.lat)
  const dLng = toRad(b.lng - a.lng)
  const h = Math.sin(dLat / 2) ** 2
    + Math.cos(toRad(a.lat)) * Math.cos(toRad(b.lat)) * Math.sin(dLng / 2) ** 2
  return 2 * EARTH_RADIUS_M * Math.asin(Math.min(1, Math.sqrt(h)))
}

/**
 * Items ({lat, lng, ...}) with `distance_m` added, nearest first; items without
 * coordinates go last, in their original order. `here` may be null (no location).
 */
function byDistance(items, here) {
  const withDistance = (items || []).map((item, index) => ({
    ...item, distance_m: here ? haversine(here, item) : null, _index: index,
  }))
  withDistance.sort((x, y) => {
    const a = x.distance_m
    const b = y.distance_m
    if (a == null && b == null) return x._index - y._index
    if (a == null) return 1
    if (b == null) return -1
    return a - b || x._index - y._index
  })
  return withDistance.map(({ _index, ...rest }) => rest)
}

module.exports = { haversine, byDistance, hasCoords, EARTH_RADIUS_M }
