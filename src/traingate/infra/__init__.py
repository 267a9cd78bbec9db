"""traingate.infra"""
