/**
 * A community's tariff: the one in force, later scheduled ones, earlier versions; managers
 * set a new version (simple per-kWh or per-hour form; time-of-use and power bands are
 * shown but edited in the web console). API: GET/POST /communities/{id}/tariffs.
 */
const api = require('../../../utils/api')
const auth = require('../../../utils/auth')
const errors = require('../../../utils/errors')
const fmt = require('../../../utils/format')
const tariff = require('../../../utils/tariff')
const wxp = require('../../../utils/wxp')

const EMPTY_FORM = { mode: 'per_kwh', energy_yuan: '', service_yuan: '0.00', hour_yuan: '',
  unit_minutes: '', free_minutes: '0', minimum_yuan: '0.00', max_hours: '' }

Component({
  data: {
    communityId: null, canEdit: false, current: null, versions: [], form: { ...EMPTY_FORM },
    editable: true, saving: false, error: '', saved: '',
  },

  methods: {
    onLoad(query) {
      this.setData({ communityId: Number(query && query.community_id),
        canEdit: auth.canManage(api.role()) })
      return this.load()
    },

    async load() {
      try {
        const versions = await api.tariffs(this.data.communityId)
        const now = tariff.inForce(versions)
        const form = now ? tariff.formFromRules(now.rules) : { ...EMPTY_FORM }
        this.setData({
          current: now ? { version: now.version, since: fmt.dateTime(now.effective_from),
            headline: tariff.headline(now.rules), lines: tariff.describe(now.rules) } : null,
          versions: versions.map((v) => ({ id: v.id, version: v.version,
            since: fmt.dateTime(v.effective_from), headline: tariff.headline(v.rules),
            scheduled: Date.parse(v.effective_from) > Date.now() })),
          form: form || { ...EMPTY_FORM },
          editable: !!form,
          error: '',
        })
      } catch (err) {
        this.setData({ error: errors.userMessage(err) })
      }
    },

    onMode(e) {
      this.setData({ 'form.mode': e.currentTarget.dataset.mode, editable: true })
    },

    onInput(e) {
      this.setData({ [`form.${e.currentTarget.dataset.field}`]: e.detail.value, error: '' })
    },

    async onSave() {
      const built = tariff.rulesFromForm(this.data.form)
      if (built.error) {
        this.setData({ error: built.error })
        return null
      }
      const text = tariff.describe(built.rules).join('\n')
      const ok = await wxp.confirm('立即生效新的收费标准？', text, '生效')
      if (!ok) return null
      this.setData({ saving: true, error: '' })
      try {
        const version = await api.setTariff(this.data.communityId, built.rules)
        this.setData({ saved: `已生效：第 ${version.version} 版` })
        await this.load()
        return version
      } catch (err) {
        const message = err.code === 'invalid_input' || err.code === 'validation_error'
          ? '收费标准不符合要求，请检查各项数值' : errors.userMessage(err)
        this.setData({ error: message })
        return null
      } finally {
        this.setData({ saving: false })
      }
    },
  },
})
