/**
 * Home: scan a port's QR code; the nearest communities with free ports (distance from
 * wx.getLocation, haversine in utils/geo.js; tap to navigate with wx.openLocation); a
 * banner for a charge in progress.
 * API: GET /public/communities?lat&lng (needs the location: without it there is no list,
 * only the scan button), GET /charging-sessions?status=active.
 */
const api = require('../../utils/api')
const fmt = require('../../utils/format')
const geo = require('../../utils/geo')
const qr = require('../../utils/qr')
const wxp = require('../../utils/wxp')
const errors = require('../../utils/errors')

Component({
  data: {
    loading: false,
    places: [],
    locationNote: '',
    active: null,
    error: '',
  },

  methods: {
    onLoad() {
      return this.refresh()
    },

    onShow() {
      return this.loadActive()
    },

    async onPullDownRefresh() {
      await this.refresh()
      wx.stopPullDownRefresh()
    },

    refresh() {
      return Promise.all([this.loadNearby(), this.loadActive()])
    },

    async loadNearby() {
      this.setData({ loading: true, error: '' })
      let here = null
      try {
        const loc = await wxp.getLocation()
        here = { lat: loc.latitude, lng: loc.longitude }
        this.setData({ locationNote: '' })
      } catch (e) {
        // the server lists communities near a point only: no location, no list
        this.setData({ loading: false, places: [],
          locationNote: '未获得位置授权，无法查找附近充电站，请直接扫描插座上的二维码' })
        return
      }
      try {
        const list = await api.nearby(here.lat, here.lng)
        // the server sends them nearest first with distance_m; sorted here again all the same
        const places = geo.byDistance(list, here).map((c) => ({
          id: c.id,
          name: c.name,
          address: c.address || '',
          lat: c.lat,
          lng: c.lng,
          distance: c.distance_m == null ? '' : fmt.distance(c.distance_m),
          free: c.free_ports || 0,
          total: c.port_count || 0,
          canNavigate: geo.hasCoords(c),
        }))
        this.setData({ places })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      } finally {
        this.setData({ loading: false })
      }
    },

    async loadActive() {
      try {
        const rows = await api.sessions({ status: 'active', limit: 1 })
        const s = rows && rows[0]
        this.setData({ active: s ? { sessionId: s.session_id, since: fmt.shortDateTime(s.started_at) }
          : null })
      } catch (e) {
        this.setData({ active: null })
      }
    },

    async onScan() {
      let res
      try {
        res = await wxp.scanCode()
      } catch (err) {
        if (!wxp.isCancel(err)) wxp.toast('扫码失败，请重试')
        return null
      }
      const code = qr.portCodeFromScan(res)
      if (!code) {
        wxp.toast('这不是充电插座的二维码')
        return null
      }
      wx.navigateTo({ url: `/pages/port/port?code=${code}` })
      return code
    },

    onNavigate(e) {
      const place = this.data.places[Number(e.currentTarget.dataset.index)]
      if (!place || !place.canNavigate) return
      wx.openLocation({ latitude: place.lat, longitude: place.lng, name: place.name,
        address: place.address, scale: 17 })
    },

    onOpenActive() {
      if (!this.data.active) return
      wx.navigateTo({ url: `/pages/charging/charging?session_id=${this.data.active.sessionId}` })
    },
  },
})
