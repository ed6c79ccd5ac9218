#!/usr/bin/env bash
# Rebuilds the front-end files committed under static/, from the GOV.UK Frontend
# package pinned in package.json. Run it after changing a .scss file here or the
# package version, then commit what changed under static/. Nothing else
# (make run, CI, production) needs Node.
#
#   static/govuk/govuk-frontend.min.css   all of GOV.UK Frontend, our settings
#   static/govuk/govuk-frontend.min.js    GOV.UK Frontend's ES module, as shipped
#   static/portal/portal.css              the portal's own small additions
#
# No image, icon or font is copied from the package: its favicons and crest are
# the GOV.UK crown and its font is GDS Transport, neither of which a service
# outside gov.uk may use. The portal's own icon is static/portal/favicon.svg.
set -euo pipefail

cd "$(dirname "$0")"
static=../static

if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund
else
    npm install --no-audit --no-fund
fi

sass() {
    # --fatal-deprecation: fail on anything GOV.UK Frontend or we do that the
    # next Sass release would break, instead of committing it silently.
    npx --no-install sass --pkg-importer=node --style=compressed --no-source-map \
        --fatal-deprecation=import --fatal-deprecation=global-builtin "$@"
}

mkdir -p "$static/govuk" "$static/portal"
rm -rf "$static/govuk/assets"
sass govuk-frontend.scss "$static/govuk/govuk-frontend.min.css"
sass portal.scss "$static/portal/portal.css"

# Drop the source-map comment: the map is not shipped, and Django's manifest
# storage would fail collectstatic looking for it.
sed '/^\/\/# sourceMappingURL=/d; s|//# sourceMappingURL=[^ ]*$||' \
    node_modules/govuk-frontend/dist/govuk/govuk-frontend.min.js \
    > "$static/govuk/govuk-frontend.min.js"

version=$(node -p 'require("govuk-frontend/package.json").version')
echo "Built GOV.UK Frontend $version into $static/govuk and $static/portal/portal.css"
