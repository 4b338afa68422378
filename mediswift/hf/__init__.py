"""Files shipped inside an exported Hugging Face model directory (see `mediswift.export`).

The modules here are copied verbatim into the export and imported there by `transformers`
(`trust_remote_code=True`), so they must stay self-contained: no `mediswift` imports.
"""
