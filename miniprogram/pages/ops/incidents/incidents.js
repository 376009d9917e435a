/**
 * A community's incidents not yet resolved (critical first): acknowledge ("I am on it",
 * stops the escalation), then resolve with a note (the server allows only
 * open → acknowledged → resolved).
 * API: GET /incidents?community_id&state=open,acknowledged,
 * POST /incidents/{id}/acknowledge {note}, POST /incidents/{id}/resolve {note}.
 */
const api = require('../../../utils/api')
const auth = require('../../../utils/auth')
const errors = require('../../../utils/errors')
const ops = require('../../../utils/ops')
const wxp = require('../../../utils/wxp')

const RANK = { critical: 0, major: 1, minor: 2 }
const rank = (i) => (i.severity in RANK ? RANK[i.severity] : 9)

Component({
  data: { communityId: null, rows: [], loading: true, canAct: false, error: '' },

  methods: {
    onLoad(query) {
      this.setData({ communityId: Number(query && query.community_id),
        canAct: auth.canManage(api.role()) })
      return this.load()
    },

    async onPullDownRefresh() {
      await this.load()
      wx.stopPullDownRefresh()
    },

    async load() {
      this.setData({ loading: true })
      try {
        const list = await api.incidents({ community_id: this.data.communityId,
          state: 'open,acknowledged', limit: 200 })
        const rows = list.filter((i) => i.state !== 'resolved')
          .sort((a, b) => rank(a) - rank(b) || b.id - a.id)
          .map(ops.incidentRow)
        this.setData({ rows, error: '' })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      } finally {
        this.setData({ loading: false })
      }
    },

    async onAck(e) {
      try {
        await api.ackIncident(Number(e.currentTarget.dataset.id), '小程序确认')
        wxp.toast('已确认', 'success')
        await this.load()
      } catch (err) {
        wxp.toast(errors.userMessage(err))
      }
    },

    async onResolve(e) {
      const id = Number(e.currentTarget.dataset.id)
      const note = await new Promise((resolve) => {
        wx.showModal({ title: '处理结果', editable: true, placeholderText: '例如：已更换插座',
          success: (res) => resolve(res.confirm ? (res.content || '已处理') : null),
          fail: () => resolve(null) })
      })
      if (note == null) return
      try {
        await api.resolveIncident(id, note)
        wxp.toast('已解决', 'success')
        await this.load()
      } catch (err) {
        wxp.toast(errors.userMessage(err))
      }
    },
  },
})
