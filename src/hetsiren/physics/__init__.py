"""hetsiren.physics"""
