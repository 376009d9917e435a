const geo = require('../../utils/geo')

test('haversine: known distances', () => {
  const tiananmen = { lat: 39.9087, lng: 116.3975 }
  const shanghai = { lat: 31.2304, lng: 121.4737 }
  const d = geo.haversine(tiananmen, shanghai)
  expect(d).toBeGreaterThan(1060000)
  expect(d).toBeLessThan(1075000)
  expect(geo.haversine(tiananmen, tiananmen)).toBe(0)
  // 0.001° of latitude is ~111 m
  const north = { lat: 39.9097, lng: 116.3975 }
  expect(Math.round(geo.haversine(tiananmen, north))).toBe(111)
})

test('haversine without coordinates', () => {
  expect(geo.haversine({ lat: 1, lng: 2 }, { lat: null, lng: 2 })).toBeNull()
  expect(geo.haversine(null, { lat: 1, lng: 2 })).toBeNull()
})

test('nearest first, places without coordinates last in their order', () => {
  const here = { lat: 30, lng: 120 }
  const items = [
    { id: 'far', lat: 30.1, lng: 120 },
    { id: 'none1', lat: null, lng: null },
    { id: 'near', lat: 30.001, lng: 120 },
    { id: 'none2' },
  ]
  const sorted = geo.byDistance(items, here)
  expect(sorted.map((x) => x.id)).toEqual(['near', 'far', 'none1', 'none2'])
  expect(Math.round(sorted[0].distance_m)).toBe(111)
  expect(sorted[2].distance_m).toBeNull()
  expect(sorted[0]).not.toHaveProperty('_index')
})

test('no location: original order, no distances', () => {
  const items = [{ id: 1, lat: 1, lng: 1 }, { id: 2, lat: 0, lng: 0 }]
  expect(geo.byDistance(items, null).map((x) => [x.id, x.distance_m])).toEqual([[1, null], [2, null]])
})
