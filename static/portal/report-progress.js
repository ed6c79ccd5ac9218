// The report export's status page: polls the export's JSON status and moves the progress bar, then shows the
// download link when the file is ready (or reloads the page to show why it failed). Without JavaScript the
// page still works: it has a "Refresh this page" link.
const panel = document.querySelector('[data-report-status-url]')

if (panel) {
  const url = panel.dataset.reportStatusUrl
  const bar = panel.querySelector('progress')
  const text = document.getElementById('report-progress-text')
  const ready = document.getElementById('report-ready')

  const poll = async () => {
    let status
    try {
      const response = await fetch(url, { headers: { Accept: 'application/json' }, credentials: 'same-origin' })
      if (!response.ok) throw new Error(`status ${response.status}`)
      status = await response.json()
    } catch {
      window.setTimeout(poll, 5000)
      return
    }
    bar.value = status.progress
    bar.textContent = `${status.progress}%`
    if (status.state === 'done') {
      panel.hidden = true
      ready.hidden = false
      text.textContent = 'Your report is ready.'
      document.querySelector('h1').textContent = 'Your report is ready'
      document.getElementById('report-download').focus()
    } else if (status.state === 'failed') {
      window.location.reload()
    } else {
      text.textContent = `${status.progress}% built. This page updates by itself.`
      window.setTimeout(poll, 1000)
    }
  }
  window.setTimeout(poll, 500)
}
