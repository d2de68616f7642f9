'''
assert old in s
s=s.replace(old,new)
open(p,'w').write(s)
