"""hetsiren.model"""
