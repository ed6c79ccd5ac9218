// Starts GOV.UK Frontend's components on every page.
// A file, not an inline <script>, because the Content-Security-Policy allows no inline script.
// Adding the classes here rather than at the top of <body> (as GOV.UK's page template does) costs a
// moment of no-JavaScript styling before modules run; the policy is worth that.
import { initAll } from '../govuk/govuk-frontend.min.js'

// Browsers that run modules are the ones GOV.UK Frontend supports.
document.body.classList.add('js-enabled', 'govuk-frontend-supported')
initAll()
