"""hetsiren.io"""
