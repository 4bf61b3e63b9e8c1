"""The OML 1.0 protocol: identities and signatures, messages, the ledger, the platform service, the host
proxy, the prover and the verifier (whitepaper §2.1; see DESIGN.md for the flow).

Submodules are imported where needed so that ``oml --help`` does not load web or database code.
"""
