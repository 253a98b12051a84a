"""hetsiren.simulate"""
