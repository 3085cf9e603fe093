// The screen's words in Chinese (the default) and English.
export const words = {
  zh: {
    apiKey: "API 密钥", signIn: "登录", signOut: "退出", overview: "总览", alerts: "告警",
    station: "站点", badKey: "密钥无效、已吊销或已过期", cityAqi: "城市 AQI",
    guangzhou: "广州", dongguan: "东莞", activeAlerts: "当前告警", advisory: "提示",
    warning: "警告", critical: "严重", noData: "无数据", since: "开始", severity: "级别",
    where: "地点", state: "状态", acknowledge: "确认", acked: "已确认", parameter: "参数",
    value: "数值", age: "距今", qc: "质控", map: "地图", waterClass: "类",
    pending: "待定", firing: "告警中", resolved: "已解除", retracted: "已撤回",
    valid: "有效", suspect: "可疑", invalid: "无效", minutes: "分钟", live: "● 实时", below_detection: "低于检出限", maintenance: "维护",
    calibration: "校准", manual: "人工", stopped: "停运", fault: "故障", over_range: "超量程",
    comm_fault: "通讯故障",
  },
  en: {
    apiKey: "API key", signIn: "Sign in", signOut: "Sign out", overview: "Overview",
    alerts: "Alerts", station: "Station", badKey: "The key is unknown, revoked or expired",
    cityAqi: "City AQI", guangzhou: "Guangzhou", dongguan: "Dongguan",
    activeAlerts: "Active alerts", advisory: "Advisory", warning: "Warning",
    critical: "Critical", noData: "No data", since: "Since", severity: "Severity",
    where: "Where", state: "State", acknowledge: "Acknowledge", acked: "Acknowledged",
    parameter: "Parameter", value: "Value", age: "Age", qc: "QC", map: "Map",
    waterClass: "Class", pending: "Pending", firing: "Firing", resolved: "Resolved",
    retracted: "Retracted", valid: "valid", suspect: "suspect", invalid: "invalid",
    minutes: "min", live: "● Live", below_detection: "below detection", maintenance: "maintenance",
    calibration: "calibration", manual: "manual", stopped: "stopped", fault: "fault",
    over_range: "over range", comm_fault: "comm. fault",
  },
};
