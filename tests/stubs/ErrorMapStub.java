// Test stand-in for NanoJ-SQUIRREL: registers the real command name, parses its options with ImageJ 1's own
// dialog code, logs them and writes the results table and error-map image the real plugin shows.
import ij.*; import ij.gui.*; import ij.measure.*; import ij.plugin.*; import ij.process.*;
public class ErrorMapStub implements PlugIn {
  public void run(String arg) {
    String opts = Macro.getOptions();
    for (String key : new String[]{"reference=", "super-resolution=", "rsf=", "max.="}) {
      if (opts == null || !(" " + opts).contains(" " + key)) { IJ.log("STUB-MISSING " + key + " in: " + opts); return; }
    }
    String[] titles = WindowManager.getImageTitles();
    GenericDialog gd = new GenericDialog("Calculate Error-Map");
    gd.addChoice("Reference Image", titles, titles[0]);
    gd.addChoice("Super-Resolution Reconstruction", titles, titles[0]);
    gd.addChoice("RSF Estimation Image", new String[]{"-- RSF unknown, estimate via optimisation --"}, "-- RSF unknown, estimate via optimisation --");
    gd.addNumericField("Max. Mag. in Optimization", 5, 0);
    gd.showDialog();
    if (gd.wasCanceled()) return;
    String ref = gd.getNextChoice(), sr = gd.getNextChoice(), rsf = gd.getNextChoice(); double mx = gd.getNextNumber();
    String rec = "reference=" + ref + " super-resolution=" + sr + " rsf=" + rsf + " max.=" + (int) mx;
    System.setProperty("fmc.stub.Calculate Error-Map, RSE and RSP", rec);
    IJ.log("stub " + rec);
    ImagePlus s = WindowManager.getImage(sr);
    ResultsTable rt = new ResultsTable();
    rt.incrementCounter();
    rt.addValue("Frame", 1);
    rt.addValue("RSP (Resolution Scaled Pearson-Correlation)", 0.865659);
    rt.addValue("RSE (Resolution Scaled Error)", 34.12404);
    rt.show("RSP and RSE values");
    ImagePlus e = new ImagePlus(sr + " - Resolution Scaled Error-Map", new FloatProcessor(s.getWidth(), s.getHeight()));
    e.show();
  }
}
