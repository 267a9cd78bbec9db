"""traingate.github"""
