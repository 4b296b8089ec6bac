"""The bridge's own session of a visitor: its cookie and record (``manager``), what the store
holds of it sealed (``sealing``), the sessions single sign-on makes (``oidc_login``,
``oidc_source``), and what operators may do to them (``admin``, ``audit``)."""
