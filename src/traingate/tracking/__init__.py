"""traingate.tracking"""
