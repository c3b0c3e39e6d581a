"""(wired when the explore feature lands)"""
from fastapi import APIRouter

router = APIRouter(tags=["explore"])
