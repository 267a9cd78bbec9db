"""traingate.data"""
