"""The web dashboard's page, styles and scripts, served by `server/routes/ui.py` at `/ui`.

Plain HTML, CSS and JavaScript modules, no build step and nothing fetched from elsewhere:
the page talks only to the control plane that served it.
"""
