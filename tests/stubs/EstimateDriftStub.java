// Test stand-in for NanoJ-Core's "Estimate Drift": the real command name, its options parsed by ImageJ 1's own
// GenericDialog and SaveDialog, recorded in the system property "fmc.stub.Estimate Drift"; writes the drift table.
import ij.*; import ij.gui.*; import ij.io.*; import ij.plugin.*;
public class EstimateDriftStub implements PlugIn {
  public void run(String arg) {
    GenericDialog gd = new GenericDialog("Estimate Drift");
    gd.addNumericField("Time averaging", 100, 0);
    gd.addNumericField("Max expected drift", 10, 0);
    gd.addChoice("Reference frame", new String[]{"first frame (default, better for fixed)", "previous frame (better for live)"}, "previous frame (better for live)");
    gd.addCheckbox("Show_cross-correlation", true);
    gd.addCheckbox("Show_drift_plot", true);
    gd.addCheckbox("Show_drift_table", false);
    gd.addCheckbox("Apply drift correction", false);
    gd.addCheckbox("Do_batch-analysis", true);
    gd.showDialog();
    if (gd.wasCanceled()) return;
    String rec = "time=" + (int) gd.getNextNumber() + " max=" + (int) gd.getNextNumber() + " reference=" + gd.getNextChoice()
      + " show_cross-correlation=" + gd.getNextBoolean() + " show_drift_plot=" + gd.getNextBoolean()
      + " show_drift_table=" + gd.getNextBoolean() + " apply=" + gd.getNextBoolean() + " do_batch-analysis=" + gd.getNextBoolean();
    SaveDialog sd = new SaveDialog("Choose where to save Drift-Table", "drift_", ".njt");
    String path = sd.getDirectory() == null ? null : sd.getDirectory() + sd.getFileName();
    rec += " save=" + path;
    System.setProperty("fmc.stub.Estimate Drift", rec);
    IJ.log("stub " + rec);
    if (path != null) IJ.saveString("frame,x,y\n1,0,0\n", path.substring(0, path.length() - 4) + "DriftTable.njt");
  }
}
