"""hetsiren.analysis"""
