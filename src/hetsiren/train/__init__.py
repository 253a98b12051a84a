"""hetsiren.train"""
