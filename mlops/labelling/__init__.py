"""`drift label`: a web page where raters compare two images a registered generator draws for a
prompt and record their choice in the preference data (drift.data.preferences).

generator.py  the model (a registry version, or a local pipeline directory) and its sampler
session.py    drawing pairs, recording and undoing answers, `dvc add`
access.py     who may answer: open on this machine, tokens beyond it
server.py     the HTTP server (standard library) and its JSON API
static/       the page: one HTML file with its CSS and JS inline
"""
